"""Processes of the e2e tests that start Ray or gantune: every process a test starts carries a
marker in its environment, and teardown kills exactly those (Ray workers leave the driver's
process group, and `ray stop` would kill every Ray process on the machine, other engineers'
included). Shared by test_platform_e2e.py and test_cluster_e2e.py."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
MARK = "GANTUNE_TEST_MARK"


def marked_pids(marker: str) -> list[int]:
    needle = f"{MARK}={marker}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if needle in (entry / "environ").read_bytes().split(b"\0"):
                    pids.append(int(entry.name))
            except OSError:  # gone, or not ours to read
                pass
    return pids


def kill_marked(marker: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while (pids := marked_pids(marker)) and time.monotonic() < deadline:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.5)
    assert not marked_pids(marker), "processes started by this test survived SIGKILL"


@pytest.fixture
def sandbox(tmp_path):
    """A working dir, an environment with a unique marker and a short private Ray temp dir."""
    marker = secrets.token_hex(6)
    ray_tmp = tempfile.mkdtemp(prefix="gtr", dir="/tmp")  # short: Ray's unix socket paths
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
    env.update({MARK: marker, "RAY_TMPDIR": ray_tmp, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"})
    yield tmp_path, env, marker
    kill_marked(marker)
    shutil.rmtree(ray_tmp, ignore_errors=True)


def gantune(*args: str) -> list[str]:
    return [str(BIN / "gantune"), *args]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_cmd(env, *args, timeout=120):
    proc = subprocess.run([str(BIN / "ray"), *args], env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc.stdout


def wait_for_nodes(env, address: str, count: int, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = ray_cmd(env, "status", "--address", address)
        # Right after `ray start` the autoscaler may not have published a report yet.
        if "Active:" in status and status.split("Active:")[1].split("Pending:")[0].count(" node_") >= count:
            return
        time.sleep(2)
    pytest.fail(f"the cluster at {address} never had {count} nodes")


def record_text(storage: Path, experiment: str) -> str:
    """The one search record of `experiment` under `storage` (search/resume.py keeps one per search)."""
    (record,) = (storage / f"{experiment}.gantune").glob("*.json")
    return record.read_text()
