"""gantune on a Ray cluster it did not start, as a cluster user launches it: a local Ray head with
the dashboard (`ray start --head` on free loopback ports, its own temp dir and token), a smoke
search submitted with `ray job submit --working-dir <repository root> -- gantune search ...`
(deploy/README.md's command), SUCCEEDED, and the parent and trial runs in MLflow. The head is
stopped afterwards by killing exactly the processes this test started (ray_processes.py)."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from ray_processes import BIN, free_port, kill_marked, ray_cmd, record_text

ROOT = Path(__file__).resolve().parents[2]
# Generous: on two shared, busy cores a smoke search under a job can take many minutes.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(2400)]


def start_head(env: dict, temp_root: str) -> str:
    """A one-node cluster with the dashboard and job API on loopback; returns the job API's URL."""
    ports = {flag: free_port() for flag in ("--port", "--dashboard-port", "--dashboard-agent-listen-port",
                                            "--dashboard-agent-grpc-port", "--runtime-env-agent-port",
                                            "--metrics-export-port", "--ray-client-server-port",
                                            "--node-manager-port", "--object-manager-port")}
    head_tmp = tempfile.mkdtemp(prefix="h", dir=temp_root)
    ray_cmd(env, "start", "--head", *[str(x) for kv in ports.items() for x in kv], "--temp-dir", head_tmp,
            "--node-ip-address", "127.0.0.1", "--include-dashboard=true", "--dashboard-host", "127.0.0.1",
            "--num-cpus", "2", "--disable-usage-stats", timeout=300)
    url = f"http://127.0.0.1:{ports['--dashboard-port']}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # the dashboard answers a moment after `ray start` returns
        try:
            urllib.request.urlopen(f"{url}/api/version", timeout=10)
            return url
        except urllib.error.HTTPError:  # 401 without the token: up
            return url
        except OSError:
            time.sleep(2)
    pytest.fail(f"the dashboard at {url} never answered")


def ray_cmd_status(env, *args, timeout=120) -> subprocess.CompletedProcess:
    """A `ray` command whose failure the caller judges (ray_cmd asserts success)."""
    return subprocess.run([str(BIN / "ray"), *args], env=env, capture_output=True, text=True, timeout=timeout)


def test_ray_job_submit_runs_a_search_on_the_cluster(sandbox):
    workdir, env, marker = sandbox
    # The cluster's own token: never this machine's ~/.ray/auth_token (as in the two-node test).
    env = {**env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
           "PATH": f"{BIN}:{env.get('PATH', '')}"}
    db = workdir / "mlflow.db"
    tracking_uri = f"sqlite:///{db}"  # absolute: the job runs in Ray's copy of the working dir
    submission = f"gantune-e2e-{marker}"
    try:
        url = start_head(env, env["RAY_TMPDIR"])
        # Blocks, streaming the job's log, until the job ends (exit 1 if it FAILED).
        submit = ray_cmd_status(
            env, "job", "submit", "--address", url, "--submission-id", submission, "--working-dir", str(ROOT), "--",
            "gantune", "search", "spaces/demo.yaml", "--smoke-test", "--num-samples", "2", "--experiment", "job",
            "--tracking-uri", tracking_uri, "--storage-path", str(workdir / "ray_results"), "--quiet",
            timeout=2000,
        )
        status = ray_cmd_status(env, "job", "status", "--address", url, submission, timeout=300)
    finally:
        kill_marked(marker)  # the head, its dashboard and agents, the job's driver and trial actors
    log = submit.stdout[-6000:] + submit.stderr[-3000:]
    # `ray job status` says "Job '<id>' succeeded" (JobStatus.SUCCEEDED).
    assert submit.returncode == 0 and "succeeded" in (status.stdout + status.stderr).lower(), log
    assert "Leaderboard (2 trials" in submit.stdout, log

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("job")
    (parent,) = client.search_runs([experiment.experiment_id], "tags.`gantune.role` = 'search'")
    assert parent.info.status == "FINISHED"
    # The entrypoint joined the job's cluster (no private cluster inside the job).
    assert parent.data.params["options.address"] == "auto"
    trials = client.search_runs([experiment.experiment_id], "tags.`gantune.role` = 'trial'")
    assert len(trials) == 2 and {t.data.tags["mlflow.parentRunId"] for t in trials} == {parent.info.run_id}
    assert all(t.info.status in ("FINISHED", "KILLED") for t in trials)


# --- SIGTERM, then the same command with --resume auto -------------------------------------------

TERM_ARGS = ["--smoke-test", "--num-samples", "3", "--set", "data.folds=3", "--set", "gan.steps=300",
             "--set", "search.scheduler=fifo", "--max-concurrent", "1", "--experiment", "term", "--quiet",
             "--resume", "auto"]


def test_sigterm_stops_resumably_and_the_same_command_with_resume_auto_finishes(sandbox):
    """SIGTERM (what `ray job stop`, pod deletion and `docker stop` send) to the driver between
    folds: exit 130, parent run KILLED, record resumable. The very same command (`--resume auto`,
    which started the search) then finishes that search: one parent, one run per trial."""
    from test_platform_e2e import DEMO, gantune, trial_runs, wait_for_a_trial_after_its_first_fold

    workdir, env, marker = sandbox
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    proc = subprocess.Popen(gantune("search", DEMO, *TERM_ARGS), cwd=workdir, env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_a_trial_after_its_first_fold(client, proc, workdir / "ray_results", "term")
        time.sleep(0.5)  # the report reaches the driver a moment after its checkpoint is written
        proc.send_signal(signal.SIGTERM)  # the driver alone, as `ray job stop` signals it
        out, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        kill_marked(marker)
    assert proc.returncode == 130, out[-2000:] + err[-4000:]
    assert "Leaderboard" not in out and "Continue it with:" in err
    experiment = client.get_experiment_by_name("term")
    (parent,) = client.search_runs([experiment.experiment_id], "tags.`gantune.role` = 'search'")
    assert parent.info.status == "KILLED"
    assert '"status": "interrupted"' in record_text(workdir / "ray_results", "term")

    again = subprocess.run(gantune("search", DEMO, *TERM_ARGS), cwd=workdir, env=env, capture_output=True,
                           text=True, timeout=1500)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-5000:]
    assert "Leaderboard (3 trials" in again.stdout
    parents = client.search_runs([experiment.experiment_id], "tags.`gantune.role` = 'search'")
    assert [p.info.run_id for p in parents] == [parent.info.run_id]  # continued, not started over
    assert client.get_run(parent.info.run_id).info.status == "FINISHED"
    runs = trial_runs(client, experiment.experiment_id)
    ids = [r.data.tags["gantune.trial_id"] for r in runs]
    assert len(ids) == len(set(ids)) == 3 and all(r.info.status == "FINISHED" for r in runs)
