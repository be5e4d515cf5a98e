"""One smoke search against a real MLflow tracking server, shared by the report test and the
browser test (each search costs about a minute of the machine's two cores)."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from chromium import browser  # noqa: F401 (the browser tests' fixture: headless Chromium)
from ray_processes import BIN, free_port, sandbox  # noqa: F401 (sandbox: the e2e tests' fixture: marked processes, private Ray temp dir)

from gantune.mlflow_server import (
    ServerConfig,
    ServerError,
    resolve,
    server_url,
    start_server,
    stop_server,
    wait_for_health,
)

ROOT = Path(__file__).resolve().parents[2]
SERVED_EXPERIMENT = "served"


@dataclass(frozen=True)
class ServedSearch:
    url: str
    """The tracking server (and MLflow UI) at http://127.0.0.1:PORT."""
    workdir: Path
    search: subprocess.CompletedProcess
    report: subprocess.CompletedProcess
    """`gantune report` run once after the search."""
    client: MlflowClient
    experiment_id: str
    report_dir: Path
    """--output copy of the report's files."""


def run(args: list[str], workdir: Path, timeout: float) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
    env.update({"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"})
    return subprocess.run(
        [str(BIN / "gantune"), *args], cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="session")
def served_search(tmp_path_factory):
    """`gantune server`'s own code starts `mlflow server` (SQLite + proxied artifacts) on a free
    loopback port; a --quiet smoke search of two trials logs to it, then `gantune report`."""
    workdir = tmp_path_factory.mktemp("served")
    cfg = resolve(ServerConfig(port=free_port(), workers=1, workdir=workdir))
    log_path = workdir / "server.log"
    with log_path.open("w") as log:
        proc = start_server(cfg, log=log)
        try:
            url = server_url(cfg)
            try:
                wait_for_health(url, timeout=180.0, proc=proc)
            except ServerError as exc:
                pytest.fail(f"{exc}\n--- server log ---\n{log_path.read_text()[-4000:]}")
            search = run(
                ["search", str(ROOT / "spaces" / "demo.yaml"), "--smoke-test", "--num-samples", "2",
                 "--experiment", SERVED_EXPERIMENT, "--tracking-uri", url, "--quiet"],
                workdir, timeout=600,
            )
            assert search.returncode == 0, search.stdout[-3000:] + search.stderr[-5000:]
            report_dir = workdir / "report"
            report = run(
                ["report", "--experiment", SERVED_EXPERIMENT, "--tracking-uri", url, "--output", str(report_dir)],
                workdir, timeout=300,
            )
            client = MlflowClient(url)
            experiment_id = client.get_experiment_by_name(SERVED_EXPERIMENT).experiment_id
            yield ServedSearch(url, workdir, search, report, client, experiment_id, report_dir)
        finally:
            stop_server(proc)
