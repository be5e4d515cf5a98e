"""Helpers shared by the server tests: HTTP status probes, a run round trip, a server that is always stopped."""

from __future__ import annotations

import base64
import contextlib
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import mlflow
from mlflow import MlflowClient

from gantune.mlflow_server import ServerConfig, ServerError, resolve, server_url, start_server, stop_server
from gantune.mlflow_server import wait_for_health

SEARCH_API = "/api/2.0/mlflow/experiments/search?max_results=1"


def get_status(
    url: str, auth: tuple[str, str] | None = None, host: str | None = None, method: str = "GET"
) -> int:
    """The HTTP status of one request; methods with a body send an empty JSON object."""
    body = b"{}" if method in ("POST", "PUT", "PATCH", "DELETE") else None
    req = urllib.request.Request(url, data=body, method=method)
    if body is not None:
        req.add_header("Content-Type", "application/json")
    if auth is not None:
        req.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    if host is not None:
        req.add_header("Host", host)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code


def log_run_with_artifact(url: str, tmp: Path) -> tuple[str, str]:
    """Log a run with a metric and a text artifact over HTTP; return (run_id, artifact_uri)."""
    client = MlflowClient(tracking_uri=url)
    exp_id = client.create_experiment(f"smoke-{tmp.name}")
    run = client.create_run(exp_id, tags={"gantune.role": "trial"})
    client.log_metric(run.info.run_id, "val_auc", 0.75, step=1)
    note = tmp / "note.txt"
    note.write_text("hello from a trial\n")
    client.log_artifact(run.info.run_id, str(note), artifact_path="samples")
    client.set_terminated(run.info.run_id)
    return run.info.run_id, run.info.artifact_uri


def assert_artifact_round_trip(url: str, tmp: Path) -> str:
    """The logged run reads back over HTTP, its artifact included; returns the artifact URI."""
    run_id, artifact_uri = log_run_with_artifact(url, tmp)
    run = MlflowClient(tracking_uri=url).get_run(run_id)
    assert run.data.metrics["val_auc"] == 0.75
    assert run.info.status == "FINISHED"
    # mlflow-artifacts: means the client uploaded through the server (proxied artifact serving),
    # not to a path it can see itself.
    assert artifact_uri.startswith("mlflow-artifacts:"), artifact_uri
    out = mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path="samples/note.txt", dst_path=str(tmp / "dl"), tracking_uri=url
    )
    assert Path(out).read_text() == "hello from a trial\n"
    return artifact_uri


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(cfg: ServerConfig) -> Iterator[str]:
    """Start `cfg` on loopback with one worker, yield its URL, stop its process group on exit."""
    cfg = resolve(cfg)
    assert cfg.host == "127.0.0.1", "test servers bind to loopback only"
    log_path = Path(cfg.workdir) / "server.log"
    with log_path.open("w") as log:
        proc = start_server(cfg, log=log)
        try:
            try:
                wait_for_health(server_url(cfg), timeout=90.0, proc=proc)
            except ServerError as e:
                raise ServerError(f"{e}\n--- server log ---\n{log_path.read_text()[-4000:]}") from e
            yield server_url(cfg)
        finally:
            stop_server(proc)



@contextlib.contextmanager
def stand_in_server(port: int, api_status: int = 200) -> Iterator[str]:
    """Something that is not our mlflow on 127.0.0.1:port: /health answers 200, every other GET
    `api_status`. Yields its URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            status = 200 if self.path.startswith("/health") else api_status
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):  # keep pytest's output clean
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        httpd.shutdown()
        httpd.server_close()
