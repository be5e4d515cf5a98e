"""Fixtures shared by the server tests: a free loopback port and a server that is always stopped."""

from __future__ import annotations

import pytest

from mlflow_server_helpers import free_port, running_server


@pytest.fixture(scope="session")
def serve():
    """`with serve(ServerConfig(...)) as url:` runs a real `mlflow server` for the block."""
    return running_server


@pytest.fixture(scope="session")
def loopback_port():
    """A function returning a currently free TCP port on 127.0.0.1."""
    return free_port
