"""Resuming a killed search without duplicated or orphaned MLflow runs.

Every search writes a small record of its own, `<storage_path>/<experiment>.gantune/<tune_name>.json`
(tune_name = `<experiment>-<parent run id[:8]>`, its Tune experiment directory beside it): which
Tune directory, which MLflow experiment and parent run, the resolved space and options. Keyed per
search, so two searches with one experiment name on one storage path (two users, a relaunch while
the first still runs) never overwrite each other's record. `--resume` picks the experiment's
unfinished search (or the one named by `--resume PARENT_RUN_ID`), restores the Tune experiment
(trials keep their ids, so each trial reopens its own run) and reuses the parent run; `--resume
auto` picks the newest unfinished, restorable search with the same space and options. The records
live on the same filesystem as the Tune results (a shared path or s3://), so any machine that can
resume the Tune experiment finds them. A record written before records were per search
(`<storage_path>/<experiment>.gantune.json`) is still read.

A driver killed between starting a trial and Tune's next experiment checkpoint leaves an MLflow
run whose trial the restored experiment never heard of; `SweepTrialRuns` closes and deletes such
orphans when the search ends, and closes any run its trial left RUNNING (search/callbacks.py).

A running search holds a lease in its record (search/lease.py): a resume refuses a search whose
driver still runs (naming its host and the lease's age) and takes over one whose lease expired."""

from __future__ import annotations

import json
import posixpath
import secrets
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import pyarrow.fs

from gantune.trainables.paths import PathEscapeError, inside

from . import lease as leases
from .lease import Lease
from .options import FLAGS, RESUME_KEYS

RECORDS_SUFFIX = ".gantune"
"""`<experiment>.gantune/`: the folder of an experiment's search records, one file per search."""
LEGACY_SUFFIX = ".gantune.json"
"""`<experiment>.gantune.json`: the one record per experiment that searches used to share."""
COMPARED_KEYS = ("fixed", "searched", "search")
"""Parts of the resolved space that must not change between a search and its resume (and the
options in options.RESUME_KEYS)."""


class ResumeError(ValueError):
    """A search that cannot be resumed; the message names the record file or the changed key."""


class LeaseHeld(ResumeError):
    """The search to resume is still running: its driver's lease is live (host and age named)."""


@dataclass(frozen=True)
class SearchRecord:
    """What `--resume` needs to find a search again."""

    experiment: str
    """MLflow experiment name (also the record's file name)."""
    experiment_id: str
    """MLflow experiment id."""
    parent_run_id: str
    """The search's parent run; a resumed search logs into the same one."""
    tune_name: str
    """Tune experiment directory name under the storage path."""
    tracking_uri: str
    """Tracking URI the runs live in; a resume must use the same store."""
    resolved: dict
    """The resolved space (fixed values, domains, search settings) the search started with."""
    status: str = "running"
    """'running' until the driver ends the search, then 'finished', or 'failed' / 'interrupted'
    (Ctrl-C), both still resumable."""
    reason: str = ""
    """Why a 'failed' search stopped (the error, in one line); empty otherwise."""
    started: str = ""
    """When the search started (UTC, ISO 8601): newest first when several are unfinished (empty in
    records written before it existed, which sort last)."""
    lease: Lease | None = None
    """The running driver's lease, renewed while it runs (search/lease.py); None once the search
    ended (and in records written before leases existed)."""

    def describe(self) -> str:
        """One line naming the search, for a choice the user has to make."""
        running = f"; {self.lease.describe()}" if self.lease is not None and self.lease.live() else ""
        return f"parent run {self.parent_run_id} ({self.status}, started {self.started or 'unknown'}{running})"


def now_utc() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def storage_uri(storage_path: str) -> str:
    """A local path made absolute (Ray workers run elsewhere); URIs (s3://...) unchanged."""
    return storage_path if "://" in storage_path else str(Path(storage_path).resolve())


def tune_name(experiment: str, parent_run_id: str) -> str:
    """Each search gets its own Tune directory, so a new search never overwrites an old one."""
    return f"{experiment}-{parent_run_id[:8]}"


def checked_inside(root: str, name: str, what: str) -> str:
    """`name` inside `root` (paths.inside), or ResumeError (`what` says where the name came from)."""
    try:
        return inside(root, name)
    except PathEscapeError as exc:
        raise ResumeError(f"{what}: {exc}") from exc


def crafted(record: SearchRecord) -> str:
    return f"the search record of parent run {record.parent_run_id}: its tune_name"


def tune_path(storage_path: str, record: SearchRecord) -> str:
    """The record's Tune directory, which a crafted record must not lead out of the storage path."""
    return checked_inside(storage_uri(storage_path), record.tune_name, crafted(record))


def records_uri(storage_path: str, experiment: str) -> str:
    """The folder of the experiment's search records."""
    return checked_inside(storage_uri(storage_path), experiment + RECORDS_SUFFIX, f"experiment {experiment!r}")


def record_uri(storage_path: str, record: SearchRecord) -> str:
    """Where this search's own record lives."""
    return checked_inside(records_uri(storage_path, record.experiment), record.tune_name + ".json", crafted(record))


def write_record(storage_path: str, record: SearchRecord) -> None:
    """Written whole, then moved into place: the lease is renewed while other drivers read it."""
    fs, path = pyarrow.fs.FileSystem.from_uri(record_uri(storage_path, record))
    fs.create_dir(posixpath.dirname(path), recursive=True)
    partial = f"{path}.{secrets.token_hex(4)}.partial"  # not *.json: read_records never lists it
    with fs.open_output_stream(partial) as f:
        f.write(json.dumps(asdict(record), indent=2, default=str).encode())
    fs.move(partial, path)


def read_records(storage_path: str, experiment: str) -> list[SearchRecord]:
    """Every search record of the experiment on this storage path, newest first (a legacy shared
    record included, unless its search has a record of its own)."""
    fs, folder = pyarrow.fs.FileSystem.from_uri(records_uri(storage_path, experiment))
    infos = fs.get_file_info(pyarrow.fs.FileSelector(folder, allow_not_found=True))
    paths = sorted(i.path for i in infos if i.type == pyarrow.fs.FileType.File and i.path.endswith(".json"))
    records = [_read(fs, path) for path in paths]
    legacy = posixpath.join(posixpath.dirname(folder), experiment + LEGACY_SUFFIX)
    if fs.get_file_info(legacy).type == pyarrow.fs.FileType.File:
        old = _read(fs, legacy)
        if old.tune_name not in {r.tune_name for r in records}:
            records.append(old)
    return sorted(records, key=lambda r: r.started, reverse=True)


def _read(fs: pyarrow.fs.FileSystem, path: str) -> SearchRecord:
    with fs.open_input_stream(path) as f:
        text = f.read().decode()
    try:
        values = json.loads(text)
        return SearchRecord(**{**values, "lease": leases.from_json(values.get("lease"))})
    except (TypeError, ValueError, AttributeError) as exc:
        raise ResumeError(f"{path}: not a gantune search record ({exc})") from exc


def mark(storage_path: str, record: SearchRecord, status: str, reason: str = "") -> SearchRecord:
    """The search ended (or paused): its status, and its lease released (no longer renewed)."""
    if record.lease is not None:
        leases.stop_renewing(record.lease.token)  # before the write: a late renewal must not undo it
    updated = replace(record, status=status, reason=reason, lease=None)
    write_record(storage_path, updated)
    return updated


TAKE_OVER_SETTLE_S = 1.0
"""After writing a take-over, wait this long before reading it back: two drivers racing for one
expired lease both write, and the one whose token did not stay gives way."""


def check_lease(storage_path: str, record: SearchRecord) -> None:
    """LeaseHeld when the record's driver still runs (its lease is live)."""
    if record.lease is not None and record.lease.live():
        raise LeaseHeld(
            f"{record_uri(storage_path, record)}: the search of parent run {record.parent_run_id} is running: "
            f"{record.lease.describe()}. Stop that driver first, or resume once its lease has expired "
            f"({record.lease.ttl_s:.0f} s without a renewal: its driver was killed or lost the storage)"
        )


def acquire(storage_path: str, record: SearchRecord, taking_over: bool) -> SearchRecord:
    """The record, status 'running', with a new lease of this driver that a thread now renews.
    `taking_over` (a resume): the stored record is read again and refused if its lease is live,
    and a driver that lost a race for an expired lease gives way (LeaseHeld)."""
    if taking_over:
        check_lease(storage_path, current(storage_path, record))
    lease = leases.new_lease()
    held = replace(record, status="running", reason="", lease=lease)
    write_record(storage_path, held)
    if taking_over:
        time.sleep(TAKE_OVER_SETTLE_S)
        now = current(storage_path, record)
        if now.lease is None or now.lease.token != lease.token:
            check_lease(storage_path, now)
            raise ResumeError(f"{record_uri(storage_path, record)}: another driver changed the record while this "
                              "one took it over; try again")

    def write(renewed: Lease) -> None:
        write_record(storage_path, replace(held, lease=renewed))

    def holder() -> str | None:
        stored = current(storage_path, record).lease
        return stored.token if stored is not None else None

    leases.LeaseKeeper(lease, write, holder, f"the search of parent run {record.parent_run_id}").start()
    return held


def current(storage_path: str, record: SearchRecord) -> SearchRecord:
    """The record as stored now (`record` itself when it has no file of its own yet: a legacy one)."""
    fs, path = pyarrow.fs.FileSystem.from_uri(record_uri(storage_path, record))
    if fs.get_file_info(path).type != pyarrow.fs.FileType.File:
        return record
    return _read(fs, path)


class StorageError(ResumeError):
    """A --storage-path the search cannot write to (Tune's results and the search record live
    there); the message names it."""


def check_writable(storage_path: str) -> None:
    """Create the storage folder and write and remove a probe file in it, or raise StorageError:
    called before the parent run exists, so a bad path leaves nothing behind."""
    probe = posixpath.join(
        storage_uri(storage_path), f".gantune-write-probe-{secrets.token_hex(6)}"
    )  # unique: searches share paths
    try:
        fs, path = pyarrow.fs.FileSystem.from_uri(probe)
        fs.create_dir(posixpath.dirname(path), recursive=True)
        with fs.open_output_stream(path) as f:
            f.write(b"ok")
        fs.delete_file(path)
    except (OSError, ValueError) as exc:  # pyarrow raises OSError subclasses, ValueError for a bad URI
        raise StorageError(
            f"--storage-path {storage_path}: cannot write there ({str(exc).strip().splitlines()[0]}); "
            "pass a writable folder or an s3:// URI"
        ) from exc


def record_to_resume(
    storage_path: str, experiment: str, resolved: dict, tracking_uri: str, which: str = "yes"
) -> SearchRecord:
    """The record of the search `--resume` continues, or a ResumeError saying why there is none.
    `which` is a parent run id (or its first 8+ characters) from `--resume PARENT_RUN_ID`, or
    "yes" for the experiment's one unfinished search (when several are, the one with this space
    and options, else the user must name one)."""
    where = records_uri(storage_path, experiment)
    records = read_records(storage_path, experiment)
    if which != "yes":
        records = [r for r in records if r.parent_run_id.startswith(which)]
        if not records:
            raise ResumeError(f"{where}: experiment '{experiment}' has no search with parent run {which}")
    if not records:
        raise ResumeError(
            f"no search of experiment '{experiment}' to resume: {where} has no search record "
            "(same --storage-path and --experiment as the killed search?)"
        )
    unfinished = [r for r in records if r.status != "finished"]  # 'failed' and 'interrupted' may be resumed
    if not unfinished:
        raise ResumeError(
            f"{where}: the last search of '{experiment}' ({records[0].describe()}) already ended; "
            "run without --resume to start a new one"
        )
    if len(unfinished) > 1:
        same = [r for r in unfinished if r.tracking_uri == tracking_uri and not changed_keys(r.resolved, resolved)]
        if len(same) != 1:
            listed = "; ".join(r.describe() for r in unfinished)
            raise ResumeError(
                f"{where}: experiment '{experiment}' has {len(unfinished)} unfinished searches ({listed}); "
                "name one with --resume PARENT_RUN_ID"
            )
        unfinished = same
    record = unfinished[0]
    check_resumable(storage_path, record, resolved, tracking_uri)
    check_lease(storage_path, record)
    return record


def auto_record(
    storage_path: str, experiment: str, resolved: dict, tracking_uri: str, can_restore
) -> SearchRecord | None:
    """`--resume auto`: the experiment's newest unfinished search with this tracking store, space
    and options that Tune saved a state of (`can_restore(tune dir)`), or None to start a new one.
    Another configuration is another search: a user's retry never continues someone else's. That
    search still running (its lease live) is refused (LeaseHeld), not started again beside it, even
    before Tune saved a state of it."""
    for record in read_records(storage_path, experiment):
        if (record.status != "finished" and record.tracking_uri == tracking_uri
                and not changed_keys(record.resolved, resolved)):
            check_lease(storage_path, record)
            if can_restore(tune_path(storage_path, record)):
                return record
    return None


def check_resumable(storage_path: str, record: SearchRecord, resolved: dict, tracking_uri: str) -> None:
    """A ResumeError naming what differs between the record and this command, if anything does."""
    tune_path(storage_path, record)  # a crafted tune_name is refused before Tune reads anything
    where = record_uri(storage_path, record)
    if record.tracking_uri != tracking_uri:
        raise ResumeError(
            f"{where}: the search logged to {record.tracking_uri}, not {tracking_uri}; "
            f"pass --tracking-uri {record.tracking_uri}"
        )
    changed = changed_keys(record.resolved, resolved)
    options = [k for k in changed if k.startswith("options.")]
    if options:
        was = record.resolved["options"]
        names = [k.removeprefix("options.") for k in options]
        flags = ", ".join(f"{FLAGS[n]} {was[n]}" if was.get(n) is not None else f"no {FLAGS[n]}" for n in names)
        raise ResumeError(f"{where}: {', '.join(options)} changed since the search started; resume with {flags}")
    if changed:
        raise ResumeError(
            f"{where}: the space changed since the search started ({', '.join(changed)}); "
            "resume with the same space file and --set values"
        )


def changed_keys(before: dict, after: dict) -> list[str]:
    """Keys of the compared sections whose values differ (compared as JSON, as stored)."""
    old, new = (json.loads(json.dumps(d, default=str)) for d in (before, after))
    changed = []
    for section in COMPARED_KEYS:
        a, b = old.get(section, {}), new.get(section, {})
        changed += [f"{section}.{k}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    if "options" in old:  # a record written before SearchOptions existed has none to compare
        a, b = old["options"], new.get("options", {})
        changed += [f"options.{k}" for k in RESUME_KEYS if a.get(k) != b.get(k)]
    return changed
