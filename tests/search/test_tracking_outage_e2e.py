"""Fault test (issue 17): the MLflow tracking server stops for 30 s while a trial is between
folds, then starts again on the same port and store. The search finishes, and every trial run
holds each of its metric points exactly once: nothing lost (every point matches what the trial
reported to Tune, in the trial's result.json) and nothing duplicated (MLflow's client resends a
request the server may have committed; gantune stamps each fold's points once per request, and
the store drops points it already holds).

A real `mlflow server` (SQLite + proxied artifacts, started by gantune's own code), real Ray,
a real search; the processes it starts are marked and killed at teardown (ray_processes.py)."""

from __future__ import annotations

import json
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from ray_processes import free_port, gantune

from gantune.mlflow_server import ServerConfig, resolve, server_url, start_server, stop_server, wait_for_health

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

OUTAGE_S = 30
ARGS = ["--smoke-test", "--num-samples", "2", "--max-concurrent", "1", "--set", "data.folds=3",
        "--set", "gan.steps=20", "--set", "search.scheduler=fifo", "--experiment", "outage", "--quiet"]


def tune_results(storage: Path) -> dict[str, dict[int, dict]]:
    """trial id -> {folds_done: the result Tune got at that fold} from every trial's result.json."""
    results: dict[str, dict[int, dict]] = {}
    for path in storage.glob("outage-*/*/result.json"):
        for line in path.read_text().splitlines():
            result = json.loads(line)
            if "folds_done" in result:
                results.setdefault(result["trial_id"], {})[int(result["folds_done"])] = result
    return results


def wait_for_a_trial_between_folds(client: MlflowClient, proc: subprocess.Popen, timeout: float = 400) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the search ended before the outage"
        experiment = client.get_experiment_by_name("outage")
        runs = client.search_runs([experiment.experiment_id], "tags.`gantune.role` = 'trial'") if experiment else []
        if any(r.info.status == "RUNNING" and r.data.metrics.get("folds_done") == 1 for r in runs):
            return
        time.sleep(0.5)
    pytest.fail("no trial logged its first fold in time")


def start(cfg: ServerConfig, log) -> subprocess.Popen:
    deadline = time.monotonic() + 60
    while True:  # the stopped server's port may take a moment to be free again
        try:
            proc = start_server(cfg, log=log)
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)
    wait_for_health(server_url(cfg), timeout=180, proc=proc)
    return proc


def test_a_30_s_tracking_server_outage_loses_and_duplicates_no_metric(sandbox):
    workdir, env, _ = sandbox
    (workdir / "server").mkdir()
    cfg = resolve(ServerConfig(port=free_port(), workers=1, workdir=workdir / "server"))
    url = server_url(cfg)
    storage = workdir / "ray_results"
    out_path, err_path = workdir / "search.out", workdir / "search.err"
    with (workdir / "server.log").open("w") as log, out_path.open("w") as out, err_path.open("w") as err:
        server = start(cfg, log)
        # Files, not pipes: retry warnings during the outage must never fill a pipe and stall the driver.
        search = subprocess.Popen(gantune("search", str(ROOT / "spaces" / "demo.yaml"), *ARGS, "--tracking-uri", url,
                                          "--storage-path", str(storage)),
                                  cwd=workdir, env=env, stdout=out, stderr=err)
        try:
            client = MlflowClient(url)
            wait_for_a_trial_between_folds(client, search)
            down_ms = int(1000 * time.time())
            stop_server(server)
            time.sleep(OUTAGE_S)
            assert search.poll() is None, "the search died during the outage"
            server = start(cfg, log)
            search.wait(timeout=700)
        finally:
            if search.poll() is None:
                search.kill()
            stop_server(server)
            server = start(cfg, log)  # to read the runs afterwards
        try:
            stdout = out_path.read_text()
            assert search.returncode == 0, stdout[-3000:] + err_path.read_text()[-5000:]
            assert "Leaderboard (2 trials" in stdout
            experiment = client.get_experiment_by_name("outage")
            runs = client.search_runs([experiment.experiment_id], "tags.`gantune.role` = 'trial'")
            reported = tune_results(storage)
            assert len(runs) == 2 and sorted(reported) == sorted(r.data.tags["gantune.trial_id"] for r in runs)
            for run in runs:
                assert run.info.status == "FINISHED", run.data.tags.get("gantune.failure_reason")
                check_history(client, run, reported[run.data.tags["gantune.trial_id"]])
            # The outage hit a trial with folds left (waited for above): folds were logged after the
            # server went down. Whether a point is stamped inside the outage or after it depends on
            # where the trial's retries blocked (seen both ways), so that is not asserted.
            stamps = [(m.timestamp - down_ms) / 1000 for r in runs
                      for m in client.get_metric_history(r.info.run_id, "folds_done")]
            assert any(s >= 0 for s in stamps), f"no fold logged after the outage began: {stamps}"
            parent = client.search_runs([experiment.experiment_id], "tags.`gantune.role` = 'search'")[0]
            assert parent.info.status == "FINISHED"
        finally:
            stop_server(server)


def check_history(client: MlflowClient, run, reported: dict[int, dict]) -> None:
    """One point per step for every metric, and each point equal to what Tune was told."""
    assert sorted(reported) == [1, 2, 3]
    for key in run.data.metrics:
        history = client.get_metric_history(run.info.run_id, key)
        per_step = Counter(m.step for m in history)
        assert all(n == 1 for n in per_step.values()), (key, per_step)
    for key, steps in (("folds_done", [1, 2, 3]), ("val_auc", [1, 2, 3]), ("fold_val_auc", [0, 1, 2])):
        history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, key)}
        assert sorted(history) == steps, (key, history)  # nothing lost
    for folds, result in reported.items():
        assert client_value(client, run, "val_auc", folds) == pytest.approx(result["val_auc"])
        for fold in range(folds):
            assert client_value(client, run, "fold_val_auc", fold) == pytest.approx(result[f"fold{fold}_val_auc"])


def client_value(client: MlflowClient, run, key: str, step: int) -> float:
    (value,) = [m.value for m in client.get_metric_history(run.info.run_id, key) if m.step == step]
    return value
