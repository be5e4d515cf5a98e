"""The resume lease (search/lease.py, search/resume.py): a running search's record names its driver;
`--resume` refuses a live lease and takes over an expired one. The two-driver test with real
`gantune search` processes is test_resume_lease_e2e.py."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from dataclasses import replace

import pytest

from gantune.search import lease as leases
from gantune.search import resume
from gantune.search.lease import Lease
from gantune.search.resume import LeaseHeld, acquire, auto_record, current, mark, record_to_resume, tune_path

from test_resume import RESOLVED, make_record


def other_host_lease(age_s: float, ttl_s: float = leases.LEASE_TTL_S) -> Lease:
    return Lease(host="gpu-node-7", pid=4242, renewed=time.time() - age_s, token="0123456789abcdef", ttl_s=ttl_s)


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def storage(tmp_path) -> str:
    return str(tmp_path / "ray_results")


def test_a_live_lease_refuses_every_resume_naming_host_and_age(tmp_path, storage):
    record = make_record(tmp_path, lease=other_host_lease(age_s=40))
    resume.write_record(storage, record)
    uri = record.tracking_uri
    restorable = {tune_path(storage, record)}.__contains__
    for attempt in (lambda: record_to_resume(storage, "exp", RESOLVED, uri),
                    lambda: record_to_resume(storage, "exp", RESOLVED, uri, which="abcdef01"),
                    lambda: auto_record(storage, "exp", RESOLVED, uri, restorable),
                    lambda: acquire(storage, record, taking_over=True)):
        with pytest.raises(LeaseHeld, match=r"is running: its driver on host gpu-node-7 \(pid 4242\) renewed its "
                                            r"lease 4\d s ago"):
            attempt()
    assert current(storage, record).lease == record.lease  # nothing was taken


def test_an_expired_lease_is_taken_over(tmp_path, storage, monkeypatch):
    monkeypatch.setattr(resume, "TAKE_OVER_SETTLE_S", 0.0)
    record = make_record(tmp_path, status="failed", lease=other_host_lease(age_s=leases.LEASE_TTL_S + 1))
    resume.write_record(storage, record)
    found = record_to_resume(storage, "exp", RESOLVED, record.tracking_uri)
    held = acquire(storage, found, taking_over=True)
    try:
        stored = current(storage, record)
        assert stored.status == "running" and stored.lease == held.lease
        assert (stored.lease.host, stored.lease.token) == (socket.gethostname(), held.lease.token)
        with pytest.raises(LeaseHeld, match=f"host {socket.gethostname()}"):  # now a second one is refused
            record_to_resume(storage, "exp", RESOLVED, record.tracking_uri)
    finally:
        mark(storage, held, "finished")


def test_a_lease_of_a_driver_gone_from_this_host_has_expired_at_once(tmp_path, storage):
    """A SIGKILLed driver on this host: resumed at once, not after the TTL."""
    gone = replace(leases.new_lease(), pid=dead_pid())
    assert not gone.live()
    assert replace(gone, pid_ns="pid:[1]").live()  # another container's pid: only the TTL can tell
    assert replace(gone, host="elsewhere").live()
    resume.write_record(storage, make_record(tmp_path, lease=gone))
    assert record_to_resume(storage, "exp", RESOLVED, make_record(tmp_path).tracking_uri).lease == gone


def test_the_lease_is_renewed_while_the_search_runs_and_released_when_it_ends(tmp_path, storage, monkeypatch):
    monkeypatch.setattr(leases, "LEASE_TTL_S", 0.6)  # renewed every 0.1 s
    record = make_record(tmp_path)
    held = acquire(storage, record, taking_over=False)
    first = current(storage, record).lease.renewed
    time.sleep(0.5)
    renewed = current(storage, record).lease
    assert renewed.token == held.lease.token and renewed.renewed > first
    assert renewed.live()  # this process renews it
    ended = mark(storage, held, "interrupted")
    time.sleep(0.3)  # no renewal after the release brings the lease back
    assert current(storage, record) == ended and ended.lease is None
    assert not held.lease.live()  # this process's lease, no longer renewed


def test_a_driver_whose_lease_was_taken_over_stops_renewing_and_says_so(tmp_path, storage, monkeypatch, capsys):
    monkeypatch.setattr(leases, "LEASE_TTL_S", 0.6)
    record = make_record(tmp_path)
    held = acquire(storage, record, taking_over=False)
    usurper = other_host_lease(age_s=0)
    resume.write_record(storage, replace(held, lease=usurper))  # a driver that found our lease expired
    time.sleep(0.4)
    assert current(storage, record).lease == usurper  # not overwritten by our renewals
    assert "now held by another driver (lease 0123456789abcdef)" in capsys.readouterr().err
    assert held.lease.token not in leases._renewing_tokens()


def test_a_driver_that_lost_the_race_for_an_expired_lease_gives_way(tmp_path, storage, monkeypatch):
    record = make_record(tmp_path, lease=other_host_lease(age_s=leases.LEASE_TTL_S + 1))
    resume.write_record(storage, record)
    winner = other_host_lease(age_s=0)
    real_sleep = time.sleep

    def the_other_driver_writes_meanwhile(seconds):
        resume.write_record(storage, replace(record, lease=winner))
        real_sleep(0)

    monkeypatch.setattr(resume.time, "sleep", the_other_driver_writes_meanwhile)
    with pytest.raises(LeaseHeld, match="host gpu-node-7"):
        acquire(storage, record, taking_over=True)
    assert current(storage, record).lease == winner
    assert not leases._renewing_tokens()


def test_records_without_a_lease_and_with_one_round_trip(tmp_path, storage):
    plain, leased = make_record(tmp_path), make_record(tmp_path, parent_run_id="99999999ffff",
                                                       tune_name="exp-99999999", lease=other_host_lease(5))
    for record in (plain, leased):
        resume.write_record(storage, record)
        assert current(storage, record) == record
    assert not list((tmp_path / "ray_results" / "exp.gantune").glob("*.partial"))  # moved into place


def test_auto_refuses_a_live_search_even_before_tune_saved_a_state_of_it(tmp_path, storage):
    """Else a second `--resume auto` in the first seconds of a search would start a duplicate beside it."""
    record = make_record(tmp_path, lease=other_host_lease(age_s=1))
    resume.write_record(storage, record)
    with pytest.raises(LeaseHeld, match="host gpu-node-7"):
        auto_record(storage, "exp", RESOLVED, record.tracking_uri, lambda path: False)
    resume.write_record(storage, replace(record, lease=other_host_lease(age_s=leases.LEASE_TTL_S)))
    assert auto_record(storage, "exp", RESOLVED, record.tracking_uri, lambda path: False) is None  # a new search
