"""A content-addressed cache of trained GANs, shared by trials, resumed trials, later searches,
`gantune evaluate` and every node of a cluster.

A trial's GANs are nearly all of its compute, and trials that share the GAN hyperparameters and
differ only downstream (ratio, filter, refiner, augmentation, classifier) would train identical
GANs. The key is a hash of everything that determines a trained GAN and nothing after it:
the exact training images and labels (a fingerprint of the tensors, not a fold index), the class
(or "all" for a conditional GAN), the GAN config but its reporting interval, the seed,
CACHE_FORMAT and a hash of the code that trains a GAN (TRAINING_CODE), so an edit to that code
is never served the generators its old version trained.

Storage goes through pyarrow's filesystem layer, the one Ray Tune's storage path uses, so a local
folder, NFS and s3:// all work. An entry is ONE object: a weights-only torch checkpoint followed
by the SHA-256 of its bytes; it is written under a temporary name and then renamed (an atomic
rename locally; an S3 put is atomic per object). Readers therefore see either no entry or a
whole one, and a truncated or altered entry fails its checksum: it is retrained and replaced,
never loaded.

Concurrency: two trials that miss the same key at once both train it and both write; no lease.
Training is deterministic for a (data, config, seed) on the CPU, and on a GPU either result is a
valid training run of that key, so the last rename wins and nothing is lost but the duplicate
work — cheaper and far simpler than leases on object stores without conditional writes."""

from __future__ import annotations

import ast
import hashlib
import io
import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .base import GANConfig, TrainedGAN

CACHE_FORMAT = 1
"""The layout of an entry (checkpoint + SHA-256 trailer) and of its key; bump it when either
changes. A change to the training code needs no bump: TRAINING_CODE is in the key."""

NOT_TRAINING = ("log_every",)
"""GANConfig fields that change what is logged, not what is trained (how often losses are
flushed into the history; every step's loss is still checked for divergence), left out of the key."""


TRAINABLES = Path(__file__).resolve().parents[1]


def training_code_hash(trainables: Path = TRAINABLES) -> str:
    """SHA-256 of the syntax trees of the code that trains a GAN: trainables/gans/*.py but this
    file, and trainables/loop.py (its batches and divergence check). Syntax trees, so comments
    and layout leave it unchanged; any change to what runs changes it."""
    files = sorted(p for p in (trainables / "gans").glob("*.py") if p.name != Path(__file__).name)
    h = hashlib.sha256()
    for path in [*files, trainables / "loop.py"]:
        h.update(path.relative_to(trainables).as_posix().encode())
        h.update(ast.dump(ast.parse(path.read_text())).encode())
    return h.hexdigest()


TRAINING_CODE = training_code_hash()

DIGEST_BYTES = 32  # SHA-256 trailer of every entry
SUFFIX = ".gan"


def fingerprint(images: torch.Tensor, labels: torch.Tensor | None = None) -> str:
    """SHA-256 of the exact training tensors (values, shape, dtype; labels too when given)."""
    h = hashlib.sha256()
    for t in (images, labels):
        if t is None:
            continue
        a = np.ascontiguousarray(t.detach().cpu().numpy())
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def gan_key(cfg: GANConfig, images: torch.Tensor, seed: int, label: int | str,
            labels: torch.Tensor | None = None) -> str:
    """The cache key of one GAN training: data fingerprint, class (or 'all'), config (but
    NOT_TRAINING), seed, format and training code."""
    payload = {
        "format": CACHE_FORMAT,
        "code": TRAINING_CODE,
        "data": fingerprint(images, labels),
        "class": label,
        "gan": {k: v for k, v in cfg.to_dict().items() if k not in NOT_TRAINING},
        "seed": int(seed),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Entry:
    key: str
    size: int
    modified: float
    """Seconds since the epoch."""


@dataclass
class CacheStats:
    """What one trial (or fold) got from the cache."""

    hits: int = 0
    misses: int = 0
    train_seconds: float = 0.0
    """Seconds spent training GANs that were not in the cache."""

    def train(self, fit: Callable[[], TrainedGAN]) -> TrainedGAN:
        """Run `fit` as a miss: counted, and its seconds added to train_seconds."""
        start = time.monotonic()
        gan = fit()
        self.train_seconds += time.monotonic() - start
        self.misses += 1
        return gan

    def as_metrics(self) -> dict[str, float]:
        return {"gan_cache_hits": self.hits, "gan_cache_misses": self.misses, "gan_train_seconds": self.train_seconds}


class GeneratorCache:
    """get / put / get_or_train on a folder or URI (see the module docstring)."""

    def __init__(self, uri: str) -> None:
        import pyarrow.fs

        self.uri = str(uri)
        self.fs, self.root = pyarrow.fs.FileSystem.from_uri(self.uri) if "://" in self.uri else (
            pyarrow.fs.LocalFileSystem(), self.uri)
        self.root = self.root.rstrip("/")

    def path(self, key: str) -> str:
        return f"{self.root}/{key[:2]}/{key}{SUFFIX}"

    # --- read ---

    def get(self, key: str, device: torch.device) -> TrainedGAN | None:
        """The entry's GAN on `device`, or None when absent, truncated or altered."""
        from . import restore_gan

        try:
            with self.fs.open_input_stream(self.path(key)) as f:
                blob = f.read()
        except (FileNotFoundError, OSError):
            return None
        body, digest = blob[:-DIGEST_BYTES], blob[-DIGEST_BYTES:]
        if len(blob) <= DIGEST_BYTES or hashlib.sha256(body).digest() != digest:
            return None  # half-written by a crashed writer, or corrupted: retrain and replace
        state = torch.load(io.BytesIO(body), map_location=device, weights_only=True)
        gan = restore_gan(state, device)
        gan.history = {k: list(v) for k, v in state.get("history", {}).items()}
        return gan

    # --- write ---

    def put(self, key: str, gan: TrainedGAN) -> None:
        buffer = io.BytesIO()
        torch.save({**gan.state(), "history": gan.history}, buffer)
        body = buffer.getvalue()
        final = self.path(key)
        self.fs.create_dir(final.rsplit("/", 1)[0], recursive=True)
        temporary = f"{final}.tmp-{uuid.uuid4().hex}"
        with self.fs.open_output_stream(temporary) as f:
            f.write(body + hashlib.sha256(body).digest())
        self.fs.move(temporary, final)  # readers see the old entry, or the whole new one

    def get_or_train(self, key: str, train: Callable[[], TrainedGAN], device: torch.device,
                     stats: CacheStats) -> TrainedGAN:
        gan = self.get(key, device)
        if gan is not None:
            stats.hits += 1
            return gan
        gan = stats.train(train)
        self.put(key, gan)
        return gan

    # --- housekeeping (gantune cache ls / prune) ---

    def entries(self) -> list[Entry]:
        import pyarrow.fs

        try:
            infos = self.fs.get_file_info(pyarrow.fs.FileSelector(self.root, recursive=True, allow_not_found=True))
        except FileNotFoundError:
            return []
        return sorted(
            (Entry(i.base_name[: -len(SUFFIX)], i.size or 0, i.mtime.timestamp() if i.mtime else 0.0)
             for i in infos if i.type == pyarrow.fs.FileType.File and i.base_name.endswith(SUFFIX)),
            key=lambda e: e.modified,
        )

    def prune(self, older_than_s: float | None = None, max_bytes: int | None = None,
              now: float | None = None) -> list[Entry]:
        """Delete entries older than `older_than_s`, then the oldest until the total is at most
        `max_bytes`; returns the deleted entries."""
        now = time.time() if now is None else now
        entries, removed = self.entries(), []
        if older_than_s is not None:
            removed += [e for e in entries if now - e.modified > older_than_s]
        kept = [e for e in entries if e not in removed]
        if max_bytes is not None:
            total = sum(e.size for e in kept)
            for e in kept:  # oldest first
                if total <= max_bytes:
                    break
                removed.append(e)
                total -= e.size
        for e in removed:
            self.fs.delete_file(self.path(e.key))
        return removed


def cached_fit(cache: GeneratorCache | None, stats: CacheStats, fit: Callable[[], TrainedGAN], device: torch.device,
               cfg: GANConfig, images: torch.Tensor, seed: int, label: int | str,
               labels: torch.Tensor | None = None) -> TrainedGAN:
    """`fit()` through the cache when there is one; without it every call trains (a miss)."""
    if cache is None:
        return stats.train(fit)
    return cache.get_or_train(gan_key(cfg, images, seed, label, labels), fit, device, stats)
