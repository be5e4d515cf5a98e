"""The local Ray instance's helpers, without Ray: the watchdog kills every process a driver
marked once the driver is SIGKILLed (the e2e version with real Ray is in
test_driver_kill_e2e.py), and a Ray temp dir too long for unix sockets is replaced."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from gantune.search.local_cluster import AF_UNIX_MAX, SESSION_MARK, SOCKET_TAIL, marked_pids, short_temp_dir

DRIVER = textwrap.dedent("""
    import subprocess, sys, time
    from gantune.search.local_cluster import start_watchdog
    watchdog = start_watchdog()
    # stands in for the GCS, the raylet and its agents: started after the watchdog, marked
    children = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
                for _ in range(2)]
    print(watchdog.marker, watchdog.process.pid, *[c.pid for c in children], flush=True)
    time.sleep(600)
""")


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"  # a zombie has ended
    except OSError:
        return False


def wait_gone(pids: list[int], timeout: float = 30) -> list[int]:
    deadline = time.monotonic() + timeout
    while (left := [p for p in pids if alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


@pytest.mark.timeout(120)
def test_the_watchdog_kills_what_a_sigkilled_driver_started():
    driver = subprocess.Popen([sys.executable, "-c", DRIVER], stdout=subprocess.PIPE, text=True)
    try:
        marker, watchdog, *children = driver.stdout.readline().split()
        children = [int(c) for c in children]
        assert sorted(marked_pids(marker)) == sorted(children)  # the mark is inherited; the watchdog has none
        time.sleep(1)
        assert all(alive(c) for c in children) and alive(int(watchdog))  # nothing happens while the driver lives
        driver.send_signal(signal.SIGKILL)
        driver.wait()
        assert wait_gone(children) == [], "a marked process outlived the driver"
        assert wait_gone([int(watchdog)]) == []  # and the watchdog ends once they are gone
    finally:
        driver.kill()
        for pid in marked_pids(marker) if "marker" in locals() else []:
            os.kill(pid, signal.SIGKILL)


def test_an_ordinary_temp_dir_is_kept_and_a_long_one_replaced():
    assert short_temp_dir("/tmp/ray") is None
    fits = "/" + "d" * (AF_UNIX_MAX - SOCKET_TAIL - 1)
    assert short_temp_dir(fits) is None
    assert short_temp_dir(fits + "x", uid=1234) == "/tmp/gantune-ray-1234"
    pytest_like = "/tmp/pytest-of-someone/pytest-123/test_search_command_on_an_unw0/ray"
    assert short_temp_dir(pytest_like) is not None  # what the e2e tests of unwritable stores hit


def test_the_session_mark_is_what_the_watchdog_looks_for(tmp_path):
    fake = tmp_path / "proc"
    for pid, env in ((11, f"A=1\0{SESSION_MARK}=abc\0"), (12, f"{SESSION_MARK}=abcd\0"), (13, "B=2\0")):
        (fake / str(pid)).mkdir(parents=True)
        (fake / str(pid) / "environ").write_bytes(env.encode())
    assert marked_pids("abc", proc=fake) == [11]
