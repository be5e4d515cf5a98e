"""The tensor cache: keys follow file content and config, writes are atomic, a second load is a
hit, an in-place edit that keeps size and mtime is a miss, and touching a file is not."""

from __future__ import annotations

import os

import torch

from gantune.trainables.data import cache, check
from gantune.trainables.data.check import load_dataset
from gantune.trainables.data.io import read_image, write_image
from gantune.trainables.data.preprocess import PreprocessConfig


def test_key_follows_file_content_and_config(tmp_path):
    f = tmp_path / "a.bin"
    f.write_bytes(b"1234")
    base = cache.cache_key([f], PreprocessConfig())
    assert cache.cache_key([f], PreprocessConfig()) == base
    assert cache.cache_key([f], PreprocessConfig(size=80)) != base
    assert cache.cache_key([f], PreprocessConfig(normalize="zscore")) != base
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert cache.cache_key([f], PreprocessConfig()) == base  # touched, same bytes: still a hit
    f.write_bytes(b"1235")  # same size ...
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # ... and the old mtime: the probe's stale case
    assert cache.cache_key([f], PreprocessConfig()) != base
    f.write_bytes(b"12345")
    assert cache.cache_key([f], PreprocessConfig()) != base
    assert cache.cache_key([tmp_path / "missing.bin"], PreprocessConfig()) != base


def test_save_is_atomic_and_loads_weights_only(private_cache):
    entry = {"images": torch.arange(6.0).reshape(1, 1, 2, 3), "meta": {"records": [{"path": "x", "size": (2, 3)}]}}
    path = cache.save("k" * 64, entry)
    assert path.parent == private_cache and [p.name for p in private_cache.iterdir()] == [path.name]  # no tmp left
    back = cache.load("k" * 64)
    assert torch.equal(back["images"], entry["images"]) and back["meta"] == entry["meta"]
    assert cache.load("0" * 64) is None
    path.write_bytes(b"half a file")
    assert cache.load("k" * 64) is None  # a damaged entry is a miss


def test_cache_dir_default_and_override(monkeypatch, tmp_path):
    monkeypatch.delenv(cache.CACHE_ENV)
    assert cache.cache_dir() == cache.Path.home() / ".cache" / "gantune"
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path))
    assert cache.cache_dir() == tmp_path


def test_second_load_hits_and_an_edit_keeping_size_and_mtime_misses(breast_tree, monkeypatch, private_cache):
    calls = []
    real = check.read_and_preprocess

    def counting(path, cfg):
        calls.append(path)
        return real(path, cfg)

    monkeypatch.setattr(check, "read_and_preprocess", counting)
    first, _ = load_dataset(breast_tree, PreprocessConfig(), folds=3, seed=0)
    assert len(calls) == 80 and len(list(private_cache.glob("*.pt"))) == 1
    second, _ = load_dataset(breast_tree, PreprocessConfig(), folds=3, seed=0)
    assert len(calls) == 80  # hit: nothing read again
    assert torch.equal(first.pool.images, second.pool.images) and first.test_files == second.test_files
    some_file = sorted(breast_tree.rglob("*.mha"))[7]
    st = some_file.stat()
    os.utime(some_file, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    load_dataset(breast_tree, PreprocessConfig(), folds=3, seed=0)
    assert len(calls) == 80  # touched, same content: still a hit
    # Rewritten uncompressed (a miss), then its pixels changed in place with the same size and the
    # old mtime restored: review 3e's stale case, which the (path, size, mtime) key served from cache.
    pixels, info = read_image(some_file)
    write_image(some_file, pixels, info.spacing, compress=False)
    before, _ = load_dataset(breast_tree, PreprocessConfig(), folds=3, seed=0)
    assert len(calls) == 160
    st = some_file.stat()
    write_image(some_file, 255 - pixels, info.spacing, compress=False)
    os.utime(some_file, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert some_file.stat().st_size == st.st_size
    after, _ = load_dataset(breast_tree, PreprocessConfig(), folds=3, seed=0)
    assert len(calls) == 240  # miss: every file read again
    everything = lambda s: torch.cat([s.pool.images, s.test.images])  # noqa: E731
    assert not torch.equal(everything(before), everything(after))
    load_dataset(breast_tree, PreprocessConfig(size=32), folds=3, seed=0)
    assert len(calls) == 320  # and after a config change
