"""The Ray instance a search starts on this machine (no --address): a temp dir short enough for
Ray's unix sockets, and a watchdog so that every process of that instance dies with its driver.

Why a watchdog: Ray ties the GCS and the raylet to the driver (PR_SET_PDEATHSIG), but the
raylet's own children, the dashboard agent and the runtime-env agent, outlive a SIGKILLed driver
by a minute or more (each notices the raylet is gone, then waits 60 s on the dead GCS to publish
the news). Every process of the instance inherits a marker in its environment from the driver;
the watchdog, in its own session so a kill of the driver's process group spares it, waits for
the driver's end (EOF on a pipe only the driver holds, or its pid gone) and kills every process
with that marker.

This module imports neither Ray nor anything heavy: the watchdog runs it with `python -m`."""

from __future__ import annotations

import os
import secrets
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

SESSION_MARK = "GANTUNE_RAY_SESSION"
"""Environment variable carrying the marker of the local Ray instance a driver started."""
AF_UNIX_MAX = 107
"""Longest path a unix socket can bind on Linux (sun_path is 108 bytes with its NUL)."""
SOCKET_TAIL = len("/session_2026-12-01_12-30-17_264155_4194304/sockets/plasma_store.10")
"""What Ray appends to its temp dir for its longest socket: the session (date, microseconds and
the driver's pid, at most 7 digits on Linux), then the socket name (with a counter suffix, as
Ray's _make_inc_temp may add)."""
KILL_WAIT_S = 30.0
"""How long the watchdog keeps killing the instance's processes (new ones may still be forking)."""


def short_temp_dir(ray_temp_dir: str, uid: int | None = None) -> str | None:
    """A shorter Ray temp dir when `ray_temp_dir` (RAY_TMPDIR/ray, TMPDIR/ray or /tmp/ray) would
    push Ray's socket paths past AF_UNIX's limit (Ray would fail to start); None when it fits."""
    if len(os.fsencode(ray_temp_dir)) + SOCKET_TAIL <= AF_UNIX_MAX:
        return None
    return f"/tmp/gantune-ray-{os.getuid() if uid is None else uid}"


def marked_pids(marker: str, proc: Path = Path("/proc")) -> list[int]:
    """Processes whose environment carries SESSION_MARK=marker (ours to read; others are skipped)."""
    needle = f"{SESSION_MARK}={marker}".encode()
    pids = []
    for entry in proc.iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if needle in (entry / "environ").read_bytes().split(b"\0"):
                    pids.append(int(entry.name))
            except OSError:  # gone, or another user's
                pass
    return pids


def pids_using(roots: list[str], proc: Path = Path("/proc")) -> list[int]:
    """Ray's renamed processes ("ray::...") with a file open under one of `roots` (a Ray session
    dir: each keeps its log files there). The renaming (setproctitle) can overwrite the start of
    /proc/PID/environ, so the marker alone may miss one; anything else using the folder (a `tail
    -f` of a log) is left alone."""
    prefixes = tuple(root.rstrip("/") + "/" for root in roots)
    pids = []
    for entry in proc.iterdir() if prefixes else ():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if (entry / "comm").read_text().startswith("ray::") and any(
                    os.readlink(fd).startswith(prefixes) for fd in (entry / "fd").iterdir()):
                pids.append(int(entry.name))
        except OSError:  # gone, or another user's
            pass
    return pids


def kill_marked(marker: str, roots: list[str] = (), wait_s: float = KILL_WAIT_S) -> int:
    """SIGKILL every process of the instance (marked, or using its session dir `roots`) until none
    is left (or `wait_s` passed); returns how many kills were sent."""
    deadline, sent = time.monotonic() + wait_s, 0
    while (pids := {*marked_pids(marker), *pids_using(list(roots))}) and time.monotonic() < deadline:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                sent += 1
            except ProcessLookupError:
                pass
        time.sleep(0.2)
    return sent


class Watchdog:
    """Marks the processes the driver starts from now on, and kills them once the driver ends."""

    def __init__(self) -> None:
        self.marker = secrets.token_hex(8)
        env = {k: v for k, v in os.environ.items() if k != SESSION_MARK}  # the watchdog itself is unmarked
        # stdin is a pipe whose write end only this process holds (Python's pipes are not
        # inherited by the Ray processes started later), so EOF means the driver is gone.
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gantune.search.local_cluster", self.marker, str(os.getpid())],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
            start_new_session=True,
        )
        os.environ[SESSION_MARK] = self.marker  # inherited by the GCS, the raylet and all they start

    def watch_session(self, session_dir: str) -> None:
        """Also kill, at the end, whatever keeps a file open in the instance's session dir."""
        self.process.stdin.write(f"{session_dir}\n".encode())
        self.process.stdin.flush()


def start_watchdog() -> Watchdog | None:
    """A watchdog for the Ray instance about to start; None where /proc cannot list processes."""
    return Watchdog() if Path("/proc/self/environ").exists() else None


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, dead but not yet reaped by its parent, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def watch(marker: str, driver: int) -> None:
    """The watchdog process: wait until the driver's end of stdin closes, or the driver is gone
    (checked every second too: a process the driver forked could hold the pipe open), then kill
    the instance."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is the driver's to handle
    told = b""  # session dirs, one a line
    while alive(driver):
        readable, _, _ = select.select([sys.stdin], [], [], 1.0)
        if readable:
            if not (chunk := os.read(sys.stdin.fileno(), 4096)):
                break  # EOF: the driver exited
            told += chunk
    kill_marked(marker, [line for line in told.decode().splitlines() if line.startswith("/")])


if __name__ == "__main__":
    watch(sys.argv[1], int(sys.argv[2]))
