"""Shared fixtures: the shipped BreastMNIST file, and small real subsets of it."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
BREASTMNIST = ROOT / "data" / "breastmnist.npz"


@pytest.fixture(scope="session")
def breast_splits():
    from gantune.trainables.data.datasets import load_medmnist_npz

    return load_medmnist_npz(BREASTMNIST)


@pytest.fixture(scope="session")
def small_pool(breast_splits):
    """40 real images per class from the BreastMNIST pool (fast enough for loop tests)."""
    labels = breast_splits.pool.labels.numpy()
    keep = np.concatenate([np.flatnonzero(labels == c)[:40] for c in (0, 1)])
    return breast_splits.pool.subset(keep)
