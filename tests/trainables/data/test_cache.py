"""The tensor cache: keys follow files and config, writes are atomic, a second load is a hit and
touching a file makes it a miss."""

from __future__ import annotations

import os

import torch

from gantune.trainables.data import cache, check
from gantune.trainables.data.check import load_dataset
from gantune.trainables.data.preprocess import PreprocessConfig


def test_key_follows_files_and_config(tmp_path):
    f = tmp_path / "a.bin"
    f.write_bytes(b"1234")
    base = cache.cache_key([f], PreprocessConfig())
    assert cache.cache_key([f], PreprocessConfig()) == base
    assert cache.cache_key([f], PreprocessConfig(size=80)) != base
    assert cache.cache_key([f], PreprocessConfig(gamma=1.5)) != base
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    touched = cache.cache_key([f], PreprocessConfig())
    assert touched != base
    f.write_bytes(b"12345")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # same mtime, new size
    assert cache.cache_key([f], PreprocessConfig()) not in (base, touched)


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


def test_second_load_hits_and_touching_a_file_misses(breast_tree, monkeypatch, private_cache):
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
    assert len(calls) == 160  # miss after the touch
    load_dataset(breast_tree, PreprocessConfig(size=32), folds=3, seed=0)
    assert len(calls) == 240  # and after a config change
