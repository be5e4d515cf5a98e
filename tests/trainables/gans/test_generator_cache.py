"""The generator cache: what its key depends on, checksummed entries, concurrent writers, pruning."""

from __future__ import annotations

import multiprocessing as mp
from dataclasses import fields, replace

import pytest
import torch

from gantune.trainables.gans.base import GANConfig
from gantune.trainables.gans.cache import NOT_TRAINING, CacheStats, GeneratorCache, cached_fit, gan_key
from gantune.trainables.gans.dcgan import fit_dcgan

CPU = torch.device("cpu")
CFG = GANConfig(steps=6, width=16, latent_dim=8, batch_size=8, log_every=3, diffaugment="translation")


def data(seed: int = 0) -> torch.Tensor:
    return torch.rand(12, 1, 28, 28, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def changed(name, value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    return {"family": "egan", "mutations": "minimax", "loss": "hinge", "diffaugment": "cutout"}.get(name, value)


@pytest.mark.parametrize("name", [f.name for f in fields(GANConfig) if f.name not in NOT_TRAINING])
def test_key_changes_with_every_gan_field(name):
    x = data()
    assert gan_key(replace(CFG, **{name: changed(name, getattr(CFG, name))}), x, 0, 1) != gan_key(CFG, x, 0, 1)


def test_key_changes_with_an_image_a_label_the_class_and_the_seed_and_nothing_else():
    x, y = data(), torch.tensor([0, 1] * 6)
    base = gan_key(CFG, x, 0, "all", y)
    assert gan_key(CFG, x.clone(), 0, "all", y.clone()) == base  # content, not identity
    x2 = x.clone()
    x2[3, 0, 5, 5] += 1e-3
    y2 = y.clone()
    y2[0] = 1
    assert gan_key(CFG, x2, 0, "all", y) != base
    assert gan_key(CFG, x, 0, "all", y2) != base
    assert gan_key(CFG, x, 1, "all", y) != base
    assert gan_key(CFG, x, 0, 0, y) != base


def fit(x: torch.Tensor, seed: int = 0):
    return lambda: fit_dcgan(CFG, x, seed=seed, device=CPU)


def test_a_hit_gives_the_same_generator_discriminator_and_history(tmp_path):
    cache, x = GeneratorCache(str(tmp_path)), data()
    first, second = CacheStats(), CacheStats()
    trained = cached_fit(cache, first, fit(x), CPU, CFG, x, 0, 1)
    loaded = cached_fit(cache, second, lambda: pytest.fail("a hit must not train"), CPU, CFG, x, 0, 1)
    assert (first.hits, first.misses, second.hits, second.misses) == (0, 1, 1, 0)
    assert first.train_seconds > 0 and second.train_seconds == 0
    assert torch.equal(trained.sample(5, seed=2), loaded.sample(5, seed=2))
    assert torch.equal(trained.score(x), loaded.score(x))
    assert loaded.history == trained.history


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_damaged_entry_is_never_loaded_but_retrained_and_replaced(tmp_path, damage):
    cache, x = GeneratorCache(str(tmp_path)), data()
    key = gan_key(CFG, x, 0, 1)
    cache.put(key, fit(x)())
    path = tmp_path / key[:2] / f"{key}.gan"
    blob = path.read_bytes()
    path.write_bytes(
        blob[: len(blob) // 2] if damage == "truncate" else blob[:100] + bytes([blob[100] ^ 1]) + blob[101:]
    )
    assert cache.get(key, CPU) is None
    stats = CacheStats()
    cache.get_or_train(key, fit(x), CPU, stats)
    assert stats.misses == 1 and cache.get(key, CPU) is not None
    assert path.read_bytes() == blob  # the same training, the same bytes


def _race(root: str, barrier) -> None:
    x = data()
    cache = GeneratorCache(root)
    barrier.wait()
    cache.get_or_train(gan_key(CFG, x, 0, 1), fit(x), CPU, CacheStats())


def test_two_processes_asking_for_one_key_leave_one_valid_entry(tmp_path):
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_race, args=(str(tmp_path), barrier)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) == 1 and files[0].suffix == ".gan"  # no temporary left behind
    assert GeneratorCache(str(tmp_path)).get(files[0].stem, CPU) is not None


def test_prune_by_age_then_by_size_oldest_first(tmp_path):
    cache, x = GeneratorCache(str(tmp_path)), data()
    keys = [gan_key(CFG, x, s, 1) for s in range(3)]
    gan = fit(x)()
    for k in keys:
        cache.put(k, gan)
    entries = cache.entries()
    assert sorted(e.key for e in entries) == sorted(keys)
    newest = max(e.modified for e in entries)
    removed = cache.prune(older_than_s=3600, now=newest + 10)
    assert removed == []
    size = entries[0].size
    removed = cache.prune(max_bytes=size)  # keeps one entry: the newest
    assert len(removed) == 2 and [e.key for e in cache.entries()] == [entries[-1].key]
    assert cache.prune(older_than_s=0, now=newest + 10)[0].key == entries[-1].key
    assert cache.entries() == []


def test_a_cache_uri_goes_through_pyarrow(tmp_path):
    cache, x = GeneratorCache(f"file://{tmp_path}"), data()
    stats = CacheStats()
    cache.get_or_train(gan_key(CFG, x, 0, 1), fit(x), CPU, stats)
    cache.get_or_train(gan_key(CFG, x, 0, 1), fit(x), CPU, stats)
    assert (stats.hits, stats.misses) == (1, 1)
    assert len(list(tmp_path.rglob("*.gan"))) == 1
