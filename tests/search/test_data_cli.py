"""`gantune data check` and `gantune search --data` on a class-folder tree of real .mha files
(BreastMNIST exported per class), with and without a corrupt file."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from gantune.search.cli import main
from gantune.trainables.data.layouts import export_medmnist_to_folders

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GANTUNE_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def mha_tree(tmp_path):
    return export_medmnist_to_folders(ROOT / "data" / "breastmnist.npz", tmp_path / "tree", per_class=30)


def test_check_summarises_a_usable_tree(mha_tree, capsys):
    assert main(["data", "check", str(mha_tree), "--folds", "3"]) == 0
    out = capsys.readouterr().out
    assert "malignant 30" in out and "normal_benign 30" in out
    assert "usable" in out


def test_check_names_the_corrupt_file_and_exits_nonzero(mha_tree, capsys):
    victim = sorted((mha_tree / "malignant").glob("*.mha"))[3]
    victim.write_bytes(victim.read_bytes()[:200])  # truncated mid-header/pixels
    assert main(["data", "check", str(mha_tree), "--folds", "3"]) == 1
    assert victim.name in capsys.readouterr().out
    # --skip-bad judges it as a search with --skip-bad would: usable without that file.
    assert main(["data", "check", str(mha_tree), "--folds", "3", "--skip-bad"]) == 0


def test_search_refuses_a_corrupt_tree_before_starting_ray(mha_tree, tmp_path):
    victim = sorted((mha_tree / "normal_benign").glob("*.mha"))[0]
    victim.write_bytes(b"not an image at all")
    proc = subprocess.run(
        [sys.executable, "-m", "gantune.search.cli", "search", str(ROOT / "spaces" / "demo.yaml"),
         "--smoke-test", "--data", str(mha_tree)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "GANTUNE_CACHE_DIR": str(tmp_path / "cache")},
    )
    assert proc.returncode == 2
    assert victim.name in proc.stderr
    assert not (tmp_path / "ray_results").exists()  # nothing started, nothing half-written


@pytest.mark.e2e
@pytest.mark.timeout(600)
def test_smoke_search_on_an_mha_tree_skipping_a_bad_file(mha_tree, tmp_path):
    victim = sorted((mha_tree / "malignant").glob("*.mha"))[0]
    victim.write_bytes(b"garbage")
    proc = subprocess.run(
        [sys.executable, "-m", "gantune.search.cli", "search", str(ROOT / "spaces" / "demo.yaml"),
         "--smoke-test", "--data", str(mha_tree), "--skip-bad", "--experiment", "tree", "--quiet"],
        cwd=tmp_path, capture_output=True, text=True, timeout=540,
        # Without MLFLOW_TRACKING_URI (an earlier test's mlflow.set_tracking_uri exports it): the
        # search must write the default ./mlflow.db that this test reads.
        env={**{k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"},
             "GANTUNE_CACHE_DIR": str(tmp_path / "cache")},
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tree")
    parent = client.search_runs([experiment.experiment_id], "tags.`gantune.role` = 'search'")[0]
    assert parent.data.tags["gantune.skipped_files"] == "1"
    skipped = client.download_artifacts(parent.info.run_id, "data/skipped_files.txt", str(tmp_path))
    assert victim.name in Path(skipped).read_text()
    trials = client.search_runs([experiment.experiment_id], "tags.`gantune.role` = 'trial'")
    assert len(trials) == 2 and all("val_auc" in t.data.metrics for t in trials)
