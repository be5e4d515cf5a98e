"""The search as a platform, against real services on this machine:

- a driver SIGKILLed mid-search, then `--resume`: every trial finished once, exactly one MLflow
  run per trial, none RUNNING, the same parent run;
- a two-node Ray cluster on loopback (`ray start --head` + a second `ray start`), joined with
  `--address`, running a search whose GAN trial diverges (gan.lr=1e30): that trial's run ends
  FAILED with the reason and the search finishes.

Every process these tests start carries a marker in its environment; teardown kills exactly those
(ray_processes.py)."""

from __future__ import annotations

import csv
import io
import os
import secrets
import shlex
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient
from ray_processes import BIN, free_port, gantune, kill_marked, ray_cmd, record_text, wait_for_nodes

ROOT = Path(__file__).resolve().parents[2]
DEMO = str(ROOT / "spaces" / "demo.yaml")
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


def trial_runs(client, experiment_id, view=ViewType.ACTIVE_ONLY):
    return client.search_runs([experiment_id], "tags.`gantune.role` = 'trial'", run_view_type=view)


def leaderboard_ids(client, parent_run_id, tmp_path) -> list[str]:
    path = client.download_artifacts(parent_run_id, "leaderboard.csv", str(tmp_path))
    return [row["trial_id"] for row in csv.DictReader(io.StringIO(Path(path).read_text()))]


# --- resume after a killed driver -------------------------------------------------------------


# --keep-artifacts all: the generator test below may pick a GAN trial that ASHA stopped early.
RESUME_ARGS = ["--smoke-test", "--num-samples", "3", "--set", "data.folds=3", "--set", "gan.steps=40",
               "--max-concurrent", "1", "--experiment", "resume", "--quiet", "--keep-artifacts", "all"]


def wait_mid_search(client, proc, tune_root: Path, timeout: float = 300, experiment_name: str = "resume"):
    """Until a trial finished, the next one is RUNNING and Tune saved its experiment state."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the search ended before it could be killed"
        experiment = client.get_experiment_by_name(experiment_name)
        if experiment is not None:
            runs = trial_runs(client, experiment.experiment_id)
            saved = list(tune_root.glob(f"{experiment_name}-*/experiment_state-*.json"))
            if (
                saved
                and any(r.info.status == "RUNNING" for r in runs)
                and any(r.info.status != "RUNNING" for r in runs)
            ):
                return
        time.sleep(0.5)
    pytest.fail("no trial finished within the timeout")


def test_killed_search_resumes_without_duplicate_or_running_runs(sandbox, capsys):
    workdir, env, marker = sandbox
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    proc = subprocess.Popen(gantune("search", DEMO, *RESUME_ARGS), cwd=workdir, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_mid_search(client, proc, workdir / "ray_results")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local cluster it started
        proc.wait()
        kill_marked(marker)  # Ray workers run in their own process groups
    experiment = client.get_experiment_by_name("resume")
    before = trial_runs(client, experiment.experiment_id)
    assert any(r.info.status == "RUNNING" for r in before)  # killed mid-trial

    done = subprocess.run(gantune("search", DEMO, *RESUME_ARGS, "--resume"), cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=420)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    assert "Leaderboard (3 trials" in done.stdout

    parents = client.search_runs([experiment.experiment_id], "tags.`gantune.role` = 'search'")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"  # the same parent run, ended
    runs = trial_runs(client, experiment.experiment_id)
    ids = [r.data.tags["gantune.trial_id"] for r in runs]
    assert sorted(ids) == sorted(leaderboard_ids(client, parents[0].info.run_id, workdir))
    assert len(ids) == len(set(ids)) == 3  # one run per trial
    assert {r.info.run_id for r in before if r.data.tags["gantune.trial_id"] in ids} <= {r.info.run_id for r in runs}
    for run in runs:
        # finished, or stopped early by ASHA: both FINISHED in MLflow, told apart by gantune.outcome
        assert run.info.status == "FINISHED", (run.info.status, run.data.tags.get("gantune.failure_reason"))
        assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        outcome = run.data.tags["gantune.outcome"]
        assert outcome in ("finished", "stopped early")
        assert (run.data.metrics["folds_done"] == 3) == (outcome == "finished")
    orphans = trial_runs(client, experiment.experiment_id, ViewType.DELETED_ONLY)
    assert all(r.info.status != "RUNNING" and r.data.tags["gantune.trial_id"] not in ids for r in orphans)
    assert '"status": "finished"' in record_text(workdir / "ray_results", "resume")
    with capsys.disabled():
        print(f"\n[resume] trials={len(set(ids))} runs={len(runs)} orphan runs deleted={len(orphans)} "
              f"runs before kill={len(before)}")

    # The generator a resumed trial logged loads and generates (the real artifact layout).
    gan_run = next(r for r in runs if float(r.data.params["synth.ratio"]) > 0)
    out = workdir / "generated"
    gen = subprocess.run(gantune("generate", f"runs:/{gan_run.info.run_id}/generator", "--num", "2", "--out", str(out),
                                 "--tracking-uri", f"sqlite:///{workdir / 'mlflow.db'}"),
                         cwd=workdir, env=env, capture_output=True, text=True, timeout=120)
    assert gen.returncode == 0, gen.stderr[-3000:]
    assert len(list(out.glob("*/*.png"))) == 4


INTERRUPT_ARGS = ["--smoke-test", "--num-samples", "3", "--set", "data.folds=3", "--set", "gan.steps=300",
                  "--set", "search.scheduler=fifo", "--max-concurrent", "1", "--experiment", "interrupt", "--quiet"]


def wait_for_a_trial_after_its_first_fold(client, proc, tune_root: Path, experiment_name: str, timeout: float = 300):
    """A trial run that is RUNNING, has logged exactly one fold, and whose checkpoint of that
    fold Tune has written."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the search ended before it could be interrupted"
        experiment = client.get_experiment_by_name(experiment_name)
        for run in trial_runs(client, experiment.experiment_id) if experiment else []:
            trial_id = run.data.tags["gantune.trial_id"]
            if (run.info.status == "RUNNING" and run.data.metrics.get("folds_done") == 1
                    and list(tune_root.glob(f"{experiment_name}-*/*{trial_id}*/checkpoint_*/folds.json"))):
                return run
        time.sleep(0.2)
    pytest.fail("no trial checkpointed its first fold within the timeout")


def test_ctrl_c_saves_the_search_and_the_printed_command_finishes_it(sandbox):
    """Ctrl-C (SIGINT to the driver's process group, as a terminal sends it) while a trial is
    between folds: exit 130, no leaderboard, the parent run KILLED and no trial run left RUNNING,
    the record resumable. The command it prints finishes the same search with one run per trial,
    and the interrupted trial goes on from its checkpointed folds instead of starting over."""
    workdir, env, marker = sandbox
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    proc = subprocess.Popen(gantune("search", DEMO, *INTERRUPT_ARGS), cwd=workdir, env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        midway = wait_for_a_trial_after_its_first_fold(client, proc, workdir / "ray_results", "interrupt")
        time.sleep(0.5)  # the report reaches the driver a moment after its checkpoint is written
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        kill_marked(marker)
    assert proc.returncode == 130, out[-2000:] + err[-4000:]
    assert "Leaderboard" not in out and "Continue it with:" in err
    experiment = client.get_experiment_by_name("interrupt")
    parent = client.search_runs([experiment.experiment_id], "tags.`gantune.role` = 'search'")[0]
    assert parent.info.status == "KILLED"
    before = trial_runs(client, experiment.experiment_id)
    assert before and all(r.info.status != "RUNNING" for r in before)
    folds_before = client.get_run(midway.info.run_id).data.metrics["folds_done"]
    assert 1 <= folds_before < 3  # interrupted between folds
    assert '"status": "interrupted"' in record_text(workdir / "ray_results", "interrupt")

    command = shlex.split(err.strip().splitlines()[-1])
    assert command[:2] == ["gantune", "search"] and command[-2:] == ["--resume", parent.info.run_id]
    done = subprocess.run([str(BIN / "gantune"), *command[1:]], cwd=workdir, env=env, capture_output=True, text=True,
                          timeout=420)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    assert "Leaderboard (3 trials" in done.stdout
    parent = client.get_run(parent.info.run_id)
    assert parent.info.status == "FINISHED"
    runs = trial_runs(client, experiment.experiment_id)
    ids = [r.data.tags["gantune.trial_id"] for r in runs]
    assert len(ids) == len(set(ids)) == 3 and sorted(ids) == sorted(
        leaderboard_ids(client, parent.info.run_id, workdir)
    )
    assert all(r.info.status == "FINISHED" for r in runs)  # FIFO: every trial runs all its folds
    # The first fold was checkpointed before Ctrl-C, so it is never run again. (A fold that ends
    # while Tune shuts the trial down is logged but never reported, so it runs again on resume.)
    folds_logged = [
        m.value for m in sorted(client.get_metric_history(midway.info.run_id, "folds_done"), key=lambda m: m.timestamp)
    ]
    assert folds_logged.count(1.0) == 1 and folds_logged[-1] == 3.0, folds_logged


# --- a two-node cluster on loopback -----------------------------------------------------------


def test_two_node_cluster_search_with_a_diverging_trial(sandbox):
    workdir, env, _ = sandbox
    # The cluster's own token, so joining never depends on this machine's ~/.ray/auth_token.
    env = {**env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    port = free_port()
    address = f"127.0.0.1:{port}"
    head_tmp, worker_tmp = (tempfile.mkdtemp(prefix=p, dir=env["RAY_TMPDIR"]) for p in ("h", "w"))
    common = ["--num-cpus", "1", "--node-ip-address", "127.0.0.1", "--disable-usage-stats"]
    ray_cmd(env, "start", "--head", "--port", str(port), "--temp-dir", head_tmp, "--include-dashboard=false", *common)
    ray_cmd(env, "start", "--address", address, "--temp-dir", worker_tmp, *common)
    wait_for_nodes(env, address, 2)

    proc = subprocess.run(
        gantune("search", DEMO, "--address", address, "--smoke-test", "--set", "gan.lr=1.0e+30",
                "--experiment", "cluster", "--max-concurrent", "2", "--quiet"),
        cwd=workdir, env=env, capture_output=True, text=True, timeout=400,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert " diverged " in proc.stdout  # the --quiet line's outcome
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("cluster")
    parent = client.search_runs([experiment.experiment_id], "tags.`gantune.role` = 'search'")[0]
    assert parent.info.status == "FINISHED"
    runs = {r.data.tags.get("gantune.baseline", "gan"): r for r in trial_runs(client, experiment.experiment_id)}
    assert set(runs) == {"real_only", "gan"}
    assert runs["real_only"].info.status == "FINISHED"
    diverged = runs["gan"]
    assert diverged.info.status == "FAILED"
    assert diverged.data.tags["gantune.failure_reason"].startswith("diverged: loss_")
    assert "nan" in diverged.data.tags["gantune.failure_reason"]
