"""Shared fixtures: the shipped BreastMNIST file, small real subsets of it, and a fresh database on
the PostgreSQL at 127.0.0.1:5432 for the tests marked `postgres`."""

from __future__ import annotations

import os
import secrets
import urllib.parse
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


POSTGRES_ADMIN_URI = os.environ.get("GANTUNE_TEST_POSTGRES_URI", "postgresql://postgres@127.0.0.1:5432/test")


def postgres_admin_connection():
    """Autocommit connection to the maintenance database; fails or skips (never passes) without it."""
    import psycopg2

    try:
        conn = psycopg2.connect(POSTGRES_ADMIN_URI, connect_timeout=5)
    except psycopg2.OperationalError as e:
        msg = f"PostgreSQL at {POSTGRES_ADMIN_URI} is not reachable ({str(e).strip()})"
        if os.environ.get("GANTUNE_ALLOW_NO_POSTGRES") == "1":
            pytest.skip(f"{msg}; skipped because GANTUNE_ALLOW_NO_POSTGRES=1")
        pytest.fail(f"{msg}; start it, or set GANTUNE_ALLOW_NO_POSTGRES=1 to skip the postgres tests")
    conn.autocommit = True  # CREATE/DROP DATABASE cannot run inside a transaction
    return conn


@pytest.fixture(scope="module")
def postgres_db():
    """A fresh database for this module, dropped afterwards; yields its SQLAlchemy URI."""
    name = f"gantune_test_{secrets.token_hex(4)}"
    conn = postgres_admin_connection()
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urllib.parse.urlparse(POSTGRES_ADMIN_URI)._replace(path=f"/{name}").geturl()
    finally:
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()

