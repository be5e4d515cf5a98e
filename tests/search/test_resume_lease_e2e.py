"""Two real drivers of one search (issue 25): a second `gantune search --resume auto` (or
`--resume PARENT_RUN_ID`) while the first still runs exits 2 naming the first's host, pid and
lease age; once the first is SIGKILLed, `--resume auto` takes the search over (its lease expired
at once: its driver ran on this host and is gone) instead of starting another."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from ray_processes import gantune, kill_marked

ROOT = Path(__file__).resolve().parents[2]
DEMO = str(ROOT / "spaces" / "demo.yaml")
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

# The second trial trains GANs for many minutes: the search is surely running when it is resumed.
ARGS = ["--smoke-test", "--num-samples", "2", "--max-concurrent", "1", "--set", "data.folds=3",
        "--set", "gan.steps=5000", "--set", "search.scheduler=fifo", "--experiment", "leased", "--quiet"]


def stored_record(workdir: Path) -> dict | None:
    records = list((workdir / "ray_results" / "leased.gantune").glob("*.json"))
    assert len(records) <= 1, records  # one search, never a second one beside it
    try:
        return json.loads(records[0].read_text()) if records else None
    except ValueError:  # not expected (written whole, then moved), but a read must not fail the wait
        return None


def wait_until(predicate, proc: subprocess.Popen, what: str, timeout: float = 400) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the driver ended before {what}"
        if predicate():
            return
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}")


def test_a_second_driver_is_refused_while_the_first_runs_and_takes_over_once_it_is_killed(sandbox):
    workdir, env, marker = sandbox
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    spawn = dict(cwd=workdir, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = subprocess.Popen(gantune("search", DEMO, *ARGS, "--resume", "auto"), **spawn)
    try:
        def first_trial_done() -> bool:  # Tune has saved a state: the search is restorable
            experiment = client.get_experiment_by_name("leased")
            runs = client.search_runs([experiment.experiment_id], "tags.`gantune.role` = 'trial'") if experiment else []
            return sorted(r.info.status for r in runs) == ["FINISHED", "RUNNING"]

        wait_until(first_trial_done, first, "the first trial finished and the second started")
        record = stored_record(workdir)
        assert record["lease"]["pid"] == first.pid and record["status"] == "running"

        for resume in ("auto", record["parent_run_id"]):
            second = subprocess.run(gantune("search", DEMO, *ARGS, "--resume", resume), cwd=workdir, env=env,
                                    capture_output=True, text=True, timeout=300)
            assert second.returncode == 2, second.stdout[-2000:] + second.stderr[-3000:]
            assert (f"is running: its driver on host {socket.gethostname()} (pid {first.pid}) renewed its lease "
                    in second.stderr), second.stderr[-3000:]
            assert "s ago" in second.stderr
        assert first.poll() is None  # the refused drivers left the running one alone
        assert stored_record(workdir)["lease"]["pid"] == first.pid
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
        kill_marked(marker)

    third = subprocess.Popen(gantune("search", DEMO, *ARGS, "--resume", "auto"), **spawn)
    try:
        def taken_over() -> bool:
            now = stored_record(workdir)
            return bool(now and now["lease"] and now["lease"]["pid"] == third.pid)

        wait_until(taken_over, third, "the third driver took the killed search over")
        now = stored_record(workdir)
        assert now["parent_run_id"] == record["parent_run_id"] and now["status"] == "running"
        experiment_id = client.get_experiment_by_name("leased").experiment_id
        parents = client.search_runs([experiment_id], "tags.`gantune.role` = 'search'")
        assert [r.info.run_id for r in parents] == [record["parent_run_id"]]  # reopened, not a new search
    finally:
        os.killpg(third.pid, signal.SIGKILL)
        third.wait()
        kill_marked(marker)
