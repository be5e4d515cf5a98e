"""Paths built from names stay inside their root: the resume record and Tune directory under the
storage path, an experiment's artifact folder, a class's sample grid. Names are validated where
they enter (experiment names in search/space.name_error, class names when a dataset loads); this
also holds for names read back from files (a search record's tune_name) and for any later caller
that forgets. Used by both sides (the driver imports from trainables, never the reverse)."""

from __future__ import annotations

import posixpath


class PathEscapeError(ValueError):
    """A name that would lead a path out of its root; the message names both."""


def inside(root: str, *names: str) -> str:
    """`root` joined with `names` (a local path or a URI such as s3://b/x or file:///x), or
    PathEscapeError when the result, normalised, is not under `root` ('..', an absolute name)."""
    scheme, sep, base = root.rpartition("://")
    joined = posixpath.join(base, *names)
    path, top = posixpath.normpath(joined), posixpath.normpath(base)
    if not (path == top or path.startswith(top.rstrip("/") + "/")):
        raise PathEscapeError(f"{posixpath.join(*names)!r} leads outside {root}")
    return f"{scheme}{sep}{joined}"
