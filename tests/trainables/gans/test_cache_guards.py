"""The generator cache's last holes (issue 26, claims.md defect 5): a change to the GAN training
code changes every key (no hand-bumped CACHE_FORMAT to forget), concurrent writers of one key
each write under their own temporary name, and the reporting interval is not in the key."""

from __future__ import annotations

import shutil
import threading
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from gantune.trainables.gans import cache as cache_module
from gantune.trainables.gans.base import GANConfig, TrainedGAN
from gantune.trainables.gans.cache import TRAINABLES, GeneratorCache, gan_key, training_code_hash
from gantune.trainables.gans.dcgan import fit_dcgan

CPU = torch.device("cpu")
CFG = GANConfig(steps=4, width=16, latent_dim=8, batch_size=8, log_every=2)


def images() -> torch.Tensor:
    return torch.rand(12, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1


@pytest.fixture
def code_copy(tmp_path) -> Path:
    """A copy of the code the hash covers, to edit."""
    (tmp_path / "gans").mkdir()
    for path in (TRAINABLES / "gans").glob("*.py"):
        shutil.copy(path, tmp_path / "gans" / path.name)
    shutil.copy(TRAINABLES / "loop.py", tmp_path / "loop.py")
    return tmp_path


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path.name}: update this test's edit"
    path.write_text(text.replace(old, new, 1))


def test_the_key_holds_the_hash_of_the_training_code(code_copy):
    assert training_code_hash(code_copy) == cache_module.TRAINING_CODE


@pytest.mark.parametrize("file, old, new", [
    ("gans/dcgan.py", "torch.manual_seed(seed)", "torch.manual_seed(seed + 1)"),  # the training loop
    ("gans/efficient.py", "def ", "def _unused():\n    pass\n\n\ndef "),  # DiffAugment / LeCam / EMA code
    ("gans/nets.py", "import", "import math\nimport"),  # the networks
    ("loop.py", "torch.randperm(n,", "torch.randperm(n + 0,"),  # the real batches
])
def test_an_edit_to_the_training_code_changes_every_key(code_copy, monkeypatch, file, old, new):
    """What replaces the manual CACHE_FORMAT bump: edited training code gets new keys, so an old
    entry can never be served to it."""
    before = gan_key(CFG, images(), 0, 1)
    edit(code_copy / file, old, new)
    monkeypatch.setattr(cache_module, "TRAINING_CODE", training_code_hash(code_copy))
    assert gan_key(CFG, images(), 0, 1) != before


def test_comments_and_layout_leave_the_keys_alone(code_copy):
    edit(code_copy / "gans" / "dcgan.py", "torch.manual_seed(seed)", "torch.manual_seed(  seed  )  # comment")
    assert training_code_hash(code_copy) == cache_module.TRAINING_CODE


def test_the_cache_module_itself_is_not_training_code(code_copy):
    """Housekeeping (ls, prune) may change without throwing every entry away."""
    edit(code_copy / "gans" / "cache.py", "def ", "def _unused():\n    pass\n\n\ndef ")
    assert training_code_hash(code_copy) == cache_module.TRAINING_CODE


def test_the_reporting_interval_is_not_in_the_key_and_does_not_change_training():
    x = images()
    other = replace(CFG, log_every=1)
    assert gan_key(other, x, 0, 1) == gan_key(CFG, x, 0, 1)
    a, b = fit_dcgan(CFG, x, seed=0, device=CPU), fit_dcgan(other, x, seed=0, device=CPU)
    for p, q in zip(a.generator.state_dict().values(), b.generator.state_dict().values()):
        assert torch.equal(p, q)


class InterleavingFS:
    """A filesystem that lets two writers both open their temporary file before either writes
    or renames: the schedule in which a shared temporary name loses an entry."""

    def __init__(self, fs, writers: int) -> None:
        self.fs, self.opened = fs, threading.Barrier(writers, timeout=30)
        self.temporaries: list[str] = []

    def open_output_stream(self, path: str):
        stream = self.fs.open_output_stream(path)
        self.temporaries.append(path)
        self.opened.wait()
        return stream

    def __getattr__(self, name: str):
        return getattr(self.fs, name)


def test_concurrent_writers_of_one_key_each_use_their_own_temporary_name(tmp_path):
    """Four threads put the same key at once, every one opening its temporary file before any
    renames it. With one shared name the first rename takes the others' file away (their rename
    fails) or they write into one file; with a name each, all succeed and one whole entry stays."""
    x = images()
    gan: TrainedGAN = fit_dcgan(CFG, x, seed=0, device=CPU)
    key = gan_key(CFG, x, 0, 1)
    cache = GeneratorCache(str(tmp_path))
    cache.fs = InterleavingFS(cache.fs, writers=4)
    errors: list[BaseException] = []

    def put() -> None:
        try:
            cache.put(key, gan)
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=put) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert len(set(cache.fs.temporaries)) == 4
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert [p.name for p in files] == [f"{key}.gan"]  # no temporary left behind
    restored = GeneratorCache(str(tmp_path)).get(key, CPU)
    assert restored is not None
    for p, q in zip(restored.generator.state_dict().values(), gan.generator.state_dict().values()):
        assert torch.equal(p, q)
