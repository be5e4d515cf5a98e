"""The lease a running search holds in its resume record (search/resume.py).

Without it `--resume` could not tell a search still running elsewhere from a killed one, and two
drivers could continue the same search (each restoring Tune's state, each reopening its runs).
The driver writes a lease (its host, pid, a unique token, when it was renewed) with the record
and renews it every `ttl_s / 6` seconds while the search runs; ending the search (finished,
failed, interrupted) releases it. A lease is live until `ttl_s` seconds pass without a renewal,
or at once when its driver ran on this host and that process is gone (a SIGKILLed driver is
resumed at once, as before). A resume refuses a search with a live lease and takes over one whose
lease expired.

Ages are compared between clocks of different hosts: the TTL (3 minutes) is far above the skew
of NTP-synchronised clocks and the few missed renewals of a slow shared filesystem."""

from __future__ import annotations

import os
import secrets
import socket
import sys
import threading
import time
from dataclasses import dataclass, replace

LEASE_TTL_S = 180.0
"""A lease not renewed for this long has expired: its driver was killed, or cut off from the storage."""
RENEWALS_PER_TTL = 6
"""Renewals within one TTL: several may fail (a storage hiccup) before the lease expires."""


def pid_namespace() -> str:
    """This process's pid namespace ('pid:[4026531836]'), '' where /proc has none: two containers
    with one host name see different processes under one pid."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


@dataclass(frozen=True)
class Lease:
    """Which driver runs a search now, and when it last said so."""

    host: str
    """The driver's host name (socket.gethostname())."""
    pid: int
    """The driver's process id on that host."""
    renewed: float
    """When the driver last renewed the lease (seconds since the epoch, time.time() on its host)."""
    token: str
    """Unique per lease: tells a driver whether its take-over survived another's racing one."""
    ttl_s: float = LEASE_TTL_S
    """Seconds without a renewal after which the lease has expired (the writer's own setting)."""
    pid_ns: str = ""
    """The driver's pid namespace: its pid is checked on this host only within the same one."""

    def age(self, now: float | None = None) -> float:
        """Seconds since the last renewal (never negative: another host's clock may run ahead)."""
        return max(0.0, (time.time() if now is None else now) - self.renewed)

    def live(self, now: float | None = None) -> bool:
        """Renewed within its TTL, by a driver that (where this host can see it) still runs."""
        if self.age(now) >= self.ttl_s:
            return False
        if self.host == socket.gethostname() and self.pid_ns == pid_namespace():
            if self.pid == os.getpid():  # this process: held only while it renews it
                return self.token in _renewing_tokens()
            return process_alive(self.pid)
        return True

    def describe(self, now: float | None = None) -> str:
        return f"its driver on host {self.host} (pid {self.pid}) renewed its lease {self.age(now):.0f} s ago"


def new_lease() -> Lease:
    """A lease of this process, renewed now (LEASE_TTL_S read at the call: tests shorten it)."""
    return Lease(host=socket.gethostname(), pid=os.getpid(), renewed=time.time(), token=secrets.token_hex(8),
                 ttl_s=LEASE_TTL_S, pid_ns=pid_namespace())


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def from_json(value: dict | None) -> Lease | None:
    return None if value is None else Lease(**value)


class LeaseKeeper:
    """A daemon thread that renews one lease: `write(lease)` stores the record with it, `holder()`
    reads back the token the record holds now (None: no lease). It stops on `stop()`, or when the
    record names another driver (ours had expired and was taken over: two drivers now run one
    search, which it says on stderr)."""

    def __init__(self, lease: Lease, write, holder, label: str) -> None:
        self.lease = lease
        self._write, self._holder, self._label = write, holder, label
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"gantune-lease-{label}", daemon=True)

    def start(self) -> LeaseKeeper:
        with _LOCK:
            _KEEPERS[self.lease.token] = self
        self._thread.start()
        return self

    def stop(self) -> None:
        """Renew no more; returns once a renewal in progress is written (so a later write wins)."""
        self._stopped.set()
        with _LOCK:
            _KEEPERS.pop(self.lease.token, None)
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()

    def _run(self) -> None:
        interval = self.lease.ttl_s / RENEWALS_PER_TTL
        while not self._stopped.wait(interval):
            try:
                self.renew()
            except Exception as exc:  # noqa: BLE001 - a storage hiccup: the next renewal may pass
                print(f"gantune: warning: could not renew the lease of {self._label} ({exc}); it expires "
                      f"{self.lease.ttl_s:.0f} s after the last renewal", file=sys.stderr, flush=True)

    def renew(self) -> None:
        if (token := self._holder()) != self.lease.token:
            self.stop()
            print(f"gantune: warning: {self._label} is now held by another driver (lease {token}): this "
                  "driver's lease had expired and was taken over; two drivers now run this search",
                  file=sys.stderr, flush=True)
            return
        renewed = replace(self.lease, renewed=time.time())
        if not self._stopped.is_set():
            self._write(renewed)
            self.lease = renewed


_LOCK = threading.Lock()
_KEEPERS: dict[str, LeaseKeeper] = {}
"""The leases this process renews, by token: a search of this process that ended without releasing
its lease (an exception past run_search) leaves a lease no one renews, which is not live."""


def _renewing_tokens() -> set[str]:
    with _LOCK:
        return set(_KEEPERS)


def stop_renewing(token: str) -> None:
    with _LOCK:
        keeper = _KEEPERS.get(token)
    if keeper is not None:
        keeper.stop()
