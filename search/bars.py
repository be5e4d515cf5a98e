"""Progress bars for the long steps of `evaluate` and `generate`.

A bar is drawn on stderr while a person watches a terminal; in a log (stderr not a TTY) tqdm
turns itself off, so CI output keeps only the commands' own lines."""

from __future__ import annotations

from tqdm.auto import tqdm


def progress_bar(total: int, desc: str, unit: str) -> tqdm:
    return tqdm(total=total, desc=desc, unit=unit, disable=None, dynamic_ncols=True, leave=True)


def write_line(line: str) -> None:
    """Print above any live bar instead of through it, flushed: in a log stdout is block-buffered,
    and `evaluate`'s per-refit lines (minutes apart) would otherwise appear only at its end."""
    import sys

    tqdm.write(line)
    sys.stdout.flush()
