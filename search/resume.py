"""Resuming a killed search without duplicated or orphaned MLflow runs.

Every search writes a small record, `<storage_path>/<experiment>.gantune.json`, next to its Tune
experiment directory: which Tune directory, which MLflow experiment and parent run. `--resume`
reads it, restores the Tune experiment (trials keep their ids, so each trial reopens its own run)
and reuses the parent run. The record lives on the same filesystem as the Tune results (a shared
path or s3://), so any machine that can resume the Tune experiment finds it.

A driver killed between starting a trial and Tune's next experiment checkpoint leaves an MLflow
run whose trial the restored experiment never heard of; `SweepTrialRuns` closes and deletes such
orphans when the search ends, and closes any run its trial left RUNNING (search/callbacks.py)."""

from __future__ import annotations

import json
import posixpath
import secrets
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import pyarrow.fs

from .options import FLAGS, RESUME_KEYS

RECORD_SUFFIX = ".gantune.json"
COMPARED_KEYS = ("fixed", "searched", "search")
"""Parts of the resolved space that must not change between a search and its resume (and the
options in options.RESUME_KEYS)."""


class ResumeError(ValueError):
    """A search that cannot be resumed; the message names the record file or the changed key."""


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


def storage_uri(storage_path: str) -> str:
    """A local path made absolute (Ray workers run elsewhere); URIs (s3://...) unchanged."""
    return storage_path if "://" in storage_path else str(Path(storage_path).resolve())


def tune_name(experiment: str, parent_run_id: str) -> str:
    """Each search gets its own Tune directory, so a new search never overwrites an old one."""
    return f"{experiment}-{parent_run_id[:8]}"


def tune_path(storage_path: str, record: SearchRecord) -> str:
    return posixpath.join(storage_uri(storage_path), record.tune_name)


def _location(storage_path: str, experiment: str) -> tuple[pyarrow.fs.FileSystem, str]:
    fs, base = pyarrow.fs.FileSystem.from_uri(storage_uri(storage_path))
    return fs, posixpath.join(base, experiment + RECORD_SUFFIX)


def record_uri(storage_path: str, experiment: str) -> str:
    return posixpath.join(storage_uri(storage_path), experiment + RECORD_SUFFIX)


def write_record(storage_path: str, record: SearchRecord) -> None:
    fs, path = _location(storage_path, record.experiment)
    fs.create_dir(posixpath.dirname(path), recursive=True)
    with fs.open_output_stream(path) as f:
        f.write(json.dumps(asdict(record), indent=2, default=str).encode())


def read_record(storage_path: str, experiment: str) -> SearchRecord | None:
    fs, path = _location(storage_path, experiment)
    if fs.get_file_info(path).type == pyarrow.fs.FileType.NotFound:
        return None
    with fs.open_input_stream(path) as f:
        text = f.read().decode()
    try:
        return SearchRecord(**json.loads(text))
    except (TypeError, ValueError) as exc:
        raise ResumeError(f"{record_uri(storage_path, experiment)}: not a gantune search record ({exc})") from exc


def mark(storage_path: str, record: SearchRecord, status: str, reason: str = "") -> SearchRecord:
    updated = replace(record, status=status, reason=reason)
    write_record(storage_path, updated)
    return updated


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


def record_to_resume(storage_path: str, experiment: str, resolved: dict, tracking_uri: str) -> SearchRecord:
    """The record of the search `--resume` continues, or a ResumeError saying why there is none."""
    where = record_uri(storage_path, experiment)
    record = read_record(storage_path, experiment)
    if record is None:
        raise ResumeError(
            f"no search of experiment '{experiment}' to resume: {where} does not exist "
            "(same --storage-path and --experiment as the killed search?)"
        )
    if record.status == "finished":  # 'failed' (the driver raised) and 'interrupted' may be resumed
        raise ResumeError(
            f"{where}: the last search of '{experiment}' already ended ({record.status}); "
            "run without --resume to start a new one"
        )
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
    return record


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
