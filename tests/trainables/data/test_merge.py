"""data.merge: a multi-class dataset read as fewer classes (RetinaMNIST grades 1-4 as one)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gantune.search.dataset import load_for_config
from gantune.trainables.config import ConfigError, TrialConfig
from gantune.trainables.data.datasets import DatasetError

ROOT = Path(__file__).resolve().parents[3]
RETINA = ROOT / "data" / "retinamnist.npz"


def config(**data) -> TrialConfig:
    return TrialConfig.from_flat({f"data.{k}": v for k, v in {"path": str(RETINA), "folds": 3, **data}.items()})


def test_merge_relabels_pool_and_test_by_group():
    raw = np.load(RETINA)
    splits, _ = load_for_config(RETINA, config(merge=[[0], [1, 2, 3, 4]], positive_class=1))
    expected_test = (raw["test_labels"].ravel() > 0).astype(int)  # plain reference: grade > 0
    assert splits.test.labels.numpy().tolist() == expected_test.tolist()
    pool_raw = np.concatenate([raw["train_labels"].ravel(), raw["val_labels"].ravel()])
    assert splits.pool.class_counts() == [int((pool_raw == 0).sum()), int((pool_raw > 0).sum())]
    assert splits.pool.class_names == ("grade0", "grade1+grade2+grade3+grade4")
    assert len(splits.official_val) == len(raw["val_labels"])  # per image: unchanged


def test_merge_groups_may_reorder_classes():
    splits, _ = load_for_config(RETINA, config(merge=[[2, 3, 4], [0, 1]], positive_class=0))
    raw = np.load(RETINA)["test_labels"].ravel()
    assert splits.test.labels.numpy().tolist() == (raw <= 1).astype(int).tolist()


@pytest.mark.parametrize("bad", [[[0, 1, 2, 3, 4]], [[0], []], [[0], [0, 1]], [[0], ["1"]], "0|1", [[0], [-1]]])
def test_malformed_merge_is_a_config_error(bad):
    with pytest.raises(ConfigError, match="data.merge"):
        config(merge=bad)


def test_merge_must_cover_every_class_of_the_dataset():
    with pytest.raises(DatasetError, match=r"'data.merge' must list every class .*0\.\.4"):
        load_for_config(RETINA, config(merge=[[0], [1, 2, 3]]))


def test_positive_class_counts_merged_classes():
    with pytest.raises(DatasetError, match="positive_class"):
        load_for_config(RETINA, config(merge=[[0], [1, 2, 3, 4]], positive_class=2))


def test_search_refuses_a_bad_merge_before_any_trial(tmp_path):
    space = tmp_path / "s.yaml"
    space.write_text(f"data:\n  path: {RETINA}\n  merge: [[0], [0, 1]]\nsearch:\n  num_samples: 1\n")
    proc = subprocess.run([sys.executable, "-m", "gantune.search.cli", "search", str(space), "--dry-run"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "data.merge" in proc.stderr and "Traceback" not in proc.stderr
