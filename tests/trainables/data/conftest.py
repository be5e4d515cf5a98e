"""Data-test fixtures: the real image files in tests/fixtures, a private cache folder, and a
small class-folder tree of BreastMNIST images exported to .mha files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

BREAST_NPZ = Path(__file__).resolve().parents[3] / "data" / "breastmnist.npz"


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    """Every test gets an empty cache folder (outside its tmp_path, which tests use as a dataset
    root); nothing is written to ~/.cache."""
    folder = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("GANTUNE_CACHE_DIR", str(folder))
    return folder


@pytest.fixture(scope="session")
def breast_npz() -> Path:
    return BREAST_NPZ


@pytest.fixture(scope="session")
def breast_tree_master(tmp_path_factory):
    from gantune.trainables.data.layouts import export_medmnist_to_folders

    return export_medmnist_to_folders(BREAST_NPZ, tmp_path_factory.mktemp("breast") / "tree", per_class=40, seed=0)


@pytest.fixture
def breast_tree(breast_tree_master, tmp_path):
    """A fresh copy per test (tests corrupt files in it): 40 BreastMNIST images per class."""
    return Path(shutil.copytree(breast_tree_master, tmp_path / "tree"))
