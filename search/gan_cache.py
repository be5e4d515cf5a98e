"""`gantune cache`: the generator cache that trials share (trainables/gans/cache.py), from the driver.

Where it lives: by default `<storage path>/gan_cache`, the same local folder, shared filesystem
or s3:// prefix that Ray Tune's storage uses, so every node of a cluster, every resumed trial and
every later search on the storage path see the same entries; `--gan-cache URI` puts it elsewhere
and `--no-gan-cache` turns it off."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

CACHE_FOLDER = "gan_cache"

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
SIZE_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30}


class CacheError(ValueError):
    """A cache location or a prune limit that cannot be used."""


def cache_location(storage_path: str, override: str | None = None, disabled: bool = False) -> str | None:
    """The URI every trial opens (None = off): --gan-cache, else under the storage path; a local
    folder is made absolute on the driver, since trials run in other working directories."""
    from .resume import storage_uri

    if disabled:
        return None
    return storage_uri(str(Path(override).expanduser()) if override and "://" not in override else
                       override or f"{storage_path.rstrip('/')}/{CACHE_FOLDER}")


def parse_age(text: str) -> float:
    """'30d' / '12h' / '90m' / '45s' -> seconds."""
    number, unit = text[:-1], text[-1:].lower()
    if unit not in UNITS or not number.replace(".", "", 1).isdigit():
        raise CacheError(f"--older-than expects a number and one of {'/'.join(UNITS)} (e.g. 30d), got {text!r}")
    return float(number) * UNITS[unit]


def parse_size(text: str) -> int:
    """'500M' / '2G' / '800k' / '1000' -> bytes."""
    t = text.strip().lower().removesuffix("b")
    unit = t[-1:] if t[-1:] in SIZE_UNITS else ""
    number = t[: len(t) - len(unit)]
    if not number.replace(".", "", 1).isdigit():
        raise CacheError(f"--max-size expects a size such as 500M or 2G, got {text!r}")
    return int(float(number) * SIZE_UNITS[unit])


def human_size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=("ls", "prune"), help="ls: list entries; prune: delete old entries / cap the size")
    p.add_argument("--storage-path", default="ray_results", help="the searches' storage path (the cache is under it)")
    p.add_argument("--gan-cache", metavar="URI", help="the cache's own location, when searches ran with --gan-cache")
    p.add_argument(
        "--older-than", metavar="AGE", help="prune: delete entries not written for this long (e.g. 30d, 12h)"
    )
    p.add_argument(
        "--max-size", metavar="SIZE", help="prune: then delete the oldest until the cache holds at most this (e.g. 2G)"
    )


def cache_main(args) -> int:
    from gantune.trainables.gans.cache import GeneratorCache

    location = cache_location(args.storage_path, args.gan_cache)
    cache = GeneratorCache(location)
    if args.action == "ls":
        entries = cache.entries()
        now = time.time()
        for e in entries:
            print(f"{e.key[:16]}  {human_size(e.size):>9}  {(now - e.modified) / 3600:7.1f} h ago")
        print(
            f"{len(entries)} trained GAN{'s' if len(entries) != 1 else ''}, "
            f"{human_size(sum(e.size for e in entries))} in {location}"
        )
        return 0
    if args.older_than is None and args.max_size is None:
        raise CacheError("prune needs --older-than AGE and/or --max-size SIZE")
    older = parse_age(args.older_than) if args.older_than else None
    size = parse_size(args.max_size) if args.max_size else None
    removed = cache.prune(older_than_s=older, max_bytes=size)
    left = cache.entries()
    print(
        f"deleted {len(removed)} entr{'ies' if len(removed) != 1 else 'y'} "
        f"({human_size(sum(e.size for e in removed))}); "
        f"{len(left)} left ({human_size(sum(e.size for e in left))}) in {location}"
    )
    return 0
