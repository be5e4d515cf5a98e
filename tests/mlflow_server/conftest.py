"""Fixtures shared by the server tests: a free loopback port and a server that is always stopped."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from gantune.mlflow_server import ServerConfig, ServerError, resolve, server_url, start_server, stop_server
from gantune.mlflow_server import wait_for_health


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


@pytest.fixture(scope="session")
def serve():
    """`with serve(ServerConfig(...)) as url:` runs a real `mlflow server` for the block."""
    return running_server


@pytest.fixture(scope="session")
def loopback_port():
    """A function returning a currently free TCP port on 127.0.0.1."""
    return free_port
