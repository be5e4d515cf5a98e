"""Preprocessed tensors cached on disk, so trials and repeated searches read a dataset once.

The key hashes what produced the tensors: every input file's path and a SHA-256 of its content,
and the preprocessing config. Changing any byte of a file (even keeping its size and mtime), or any
preprocessing field, gives a new key; touching a file without changing it does not. Hashing reads
every file once per check or search (hundreds of MB/s), far less than decoding and resampling. An
entry is a dict of tensors plus plain metadata written with torch.save to a temporary
file and renamed into place, so a crash or a concurrent trial never sees half an entry.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

CACHE_ENV = "GANTUNE_CACHE_DIR"
"""Environment variable that overrides the cache folder."""
CACHE_VERSION = 2
"""Bump when the preprocessing code changes what it produces for the same config (2: content-hashed
keys, enhancement no longer part of preprocessing)."""


def cache_dir() -> Path:
    """$GANTUNE_CACHE_DIR, else ~/.cache/gantune."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "gantune")


def file_fingerprint(path: str | Path) -> list[Any]:
    """[absolute path, size, sha256 of the content]; a missing file hashes as size -1 (it may
    appear later). Content, not mtime: an in-place edit that keeps size and mtime is still seen."""
    path = Path(path).absolute()
    try:
        with path.open("rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
    except FileNotFoundError:
        return [str(path), -1, ""]
    return [str(path), path.stat().st_size, digest]


def cache_key(files: Iterable[str | Path], config: Any, extra: dict[str, Any] | None = None) -> str:
    """sha256 over the files' fingerprints (in the given order), the config (a dataclass or a
    JSON-able value) and `extra` (e.g. labels from a manifest)."""
    config = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else config
    payload = {
        "version": CACHE_VERSION,
        "files": [file_fingerprint(f) for f in files],
        "config": config,
        "extra": extra or {},
    }
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def entry_path(key: str, folder: Path | None = None) -> Path:
    return (folder or cache_dir()) / f"{key}.pt"


def load(key: str, folder: Path | None = None) -> dict[str, Any] | None:
    """The cached dict, or None on a miss (or an unreadable entry, which is then recomputed)."""
    path = entry_path(key, folder)
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - a damaged entry is a miss, never a failed trial
        return None


def save(key: str, entry: dict[str, Any], folder: Path | None = None) -> Path:
    """Write atomically: a unique temporary file in the same folder, then os.replace."""
    path = entry_path(key, folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{key[:16]}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(entry, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
