"""A SIGKILLed search driver (issue 17, defect 14), with real Ray, MLflow (SQLite) and gantune:

- a trial that had reported all its folds before the kill, while Tune's experiment snapshot
  still held none of them, is not computed again on `--resume`: its folds come back from its own
  checkpoints, and every metric of every trial run has exactly one point per step;
- no process of the Ray instance the driver started survives it (Ray's dashboard and
  runtime-env agents used to outlive it by a minute or more).

Every process a test starts carries a marker in its environment (ray_processes.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from ray_processes import gantune, kill_marked, marked_pids

ROOT = Path(__file__).resolve().parents[2]
DEMO = str(ROOT / "spaces" / "demo.yaml")
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

LAG_ARGS = ["--smoke-test", "--num-samples", "2", "--max-concurrent", "1", "--set", "data.folds=3",
            "--set", "gan.steps=40", "--set", "search.scheduler=fifo", "--experiment", "lag", "--quiet"]
SNAPSHOT_ONCE = {"TUNE_GLOBAL_CHECKPOINT_S": "3600"}
"""Tune snapshots the experiment at its first step, then (for an hour) only when it ends: the lag
that let a restored trial re-run folds it had reported, made certain instead of a race."""


def trial_runs(client: MlflowClient, experiment_id: str) -> list:
    return client.search_runs([experiment_id], "tags.`gantune.role` = 'trial'")


def wait_until(predicate, proc: subprocess.Popen, what: str, timeout: float = 400) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the search ended before {what}"
        if predicate():
            return
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}")


def points_per_step(client: MlflowClient, run) -> dict[str, Counter]:
    return {k: Counter(m.step for m in client.get_metric_history(run.info.run_id, k)) for k in run.data.metrics}


def artifact_mtimes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def test_a_trial_done_before_the_kill_is_not_run_again_and_no_metric_point_is_duplicated(sandbox):
    workdir, env, marker = sandbox
    env = {**env, **SNAPSHOT_ONCE}
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    proc = subprocess.Popen(gantune("search", DEMO, *LAG_ARGS), cwd=workdir, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def first_done_second_running() -> bool:
        experiment = client.get_experiment_by_name("lag")
        runs = trial_runs(client, experiment.experiment_id) if experiment else []
        statuses = sorted(r.info.status for r in runs)
        done = [r for r in runs if r.info.status == "FINISHED"]
        # the second trial runs, so the first one's last report and checkpoint are through
        return statuses == ["FINISHED", "RUNNING"] and done[0].data.metrics.get("folds_done") == 3

    try:
        wait_until(first_done_second_running, proc, "the first trial finished and the second started")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        kill_marked(marker)
    experiment = client.get_experiment_by_name("lag")
    (done,) = [r for r in trial_runs(client, experiment.experiment_id) if r.info.status == "FINISHED"]
    artifacts = Path(done.info.artifact_uri.removeprefix("file://"))
    before = artifact_mtimes(artifacts)
    assert any(k.startswith("plots/") for k in before)

    resumed = subprocess.run(gantune("search", DEMO, *LAG_ARGS, "--resume"), cwd=workdir, env=env,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-5000:]
    assert "Leaderboard (2 trials" in resumed.stdout

    runs = trial_runs(client, experiment.experiment_id)
    assert done.info.run_id in {r.info.run_id for r in runs}  # the trial Tune knew, kept (not an orphan)
    assert all(r.info.status == "FINISHED" for r in runs)  # FIFO: every trial ran all its folds
    for run in runs:
        counts = points_per_step(client, run)
        assert sorted(counts["folds_done"]) == [1, 2, 3] and sorted(counts["fold_val_auc"]) == [0, 1, 2]
        duplicated = {k: c for k, c in counts.items() if any(n > 1 for n in c.values())}
        assert not duplicated, (run.data.tags["gantune.trial_id"], duplicated)
    # Not computed again: nothing of the finished trial was logged anew (a re-run fold re-logs its plots).
    assert artifact_mtimes(artifacts) == before


# Two samples: the smoke test's first trial is the real-only baseline (no GAN, a few seconds);
# the second trains GANs for many minutes, so the search is surely mid-way when it is killed.
KILL_ARGS = ["--smoke-test", "--num-samples", "2", "--max-concurrent", "1", "--set", "data.folds=3",
             "--set", "gan.steps=5000", "--set", "search.scheduler=fifo", "--experiment", "killed", "--quiet"]
AGENTS = ("ray::DashboardA", "ray::RuntimeEnv")
"""The two agents' process names, as /proc/PID/comm cuts them (15 characters)."""
SURVIVOR_WAIT_S = 30
"""Ray's agents outlived a killed driver by 60-100 s here; the watchdog kills them at once."""


def session_pids(marker: str, ray_tmp: str) -> list[int]:
    """The test's processes: marked, or (Ray's renaming can overwrite the start of a process's
    /proc environ, marker included) any process with a file open under the test's Ray temp dir."""
    return sorted({*marked_pids(marker), *pids_using([ray_tmp], proc=Path("/proc"))} - {os.getpid()})


def pids_using(roots: list[str], proc: Path) -> list[int]:
    pids = []
    for entry in proc.iterdir():
        try:
            fds = (entry / "fd").iterdir() if entry.name.isdigit() else ()
            if any(os.readlink(fd).startswith(tuple(roots)) for fd in fds):
                pids.append(int(entry.name))
        except OSError:
            pass
    return pids


def process_names(pids: list[int]) -> dict[int, str]:
    names = {}
    for pid in pids:
        try:
            names[pid] = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:  # ended meanwhile
            pass
    return names


def test_no_process_of_the_local_ray_instance_outlives_a_sigkilled_driver(sandbox):
    workdir, env, marker = sandbox
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    proc = subprocess.Popen(gantune("search", DEMO, *KILL_ARGS), cwd=workdir, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def a_trial_runs_beside_the_agents() -> bool:
        experiment = client.get_experiment_by_name("killed")
        names = process_names(session_pids(marker, env["RAY_TMPDIR"])).values()
        agents = [n for n in names if n.startswith(AGENTS)]  # what used to leak
        return bool(experiment and trial_runs(client, experiment.experiment_id)) and set(agents) == set(AGENTS)

    try:
        wait_until(a_trial_runs_beside_the_agents, proc, "a trial beside Ray's agents")
        os.kill(proc.pid, signal.SIGKILL)  # the driver alone, as the OOM killer or `kill -9 PID` would
        proc.wait()
        deadline = time.monotonic() + SURVIVOR_WAIT_S
        while (left := session_pids(marker, env["RAY_TMPDIR"])) and time.monotonic() < deadline:
            time.sleep(0.5)
        survivors = process_names(left)
        assert not survivors, f"alive {SURVIVOR_WAIT_S} s after the driver's SIGKILL: {survivors}"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        kill_marked(marker)
