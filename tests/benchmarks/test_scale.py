"""benchmarks/scale.py's parts that need no cluster (the simulation itself is `make bench-scale`):
the stub keeps run_trial's contract, and a size merges into results.json without losing the rest."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # benchmarks/ is a folder of the repository, not of the package

from benchmarks import scale  # noqa: E402


def test_the_stub_reports_every_fold_from_skip_folds_on_with_the_fold_s_real_labels(monkeypatch, breast_splits):
    from gantune.search.space import load_space
    from gantune.trainables.config import TrialConfig
    from gantune.trainables.trial import trial_folds

    monkeypatch.setenv(scale.FOLD_S_ENV, "0")
    space = load_space(scale.DEMO).with_overrides({"data.folds": 5})
    cfg = TrialConfig.from_flat({**space.fixed, "synth.ratio": 0.5})
    folds = []
    scale.sleeping_run_trial(cfg, breast_splits, "cpu", on_fold=folds.append, skip_folds=2)
    expected = trial_folds(cfg, breast_splits)[2:]
    assert [f.fold for f in folds] == [f.index for f in expected] == [2, 3, 4]
    for result, fold in zip(folds, expected):
        assert (result.val_labels == fold.val_view(breast_splits.pool).labels.numpy()).all()
        assert result.val_proba.shape == (len(result.val_labels), 2) and 0.0 <= result.metrics["auc"] <= 1.0
        assert not result.synthetic.gans


def test_a_size_merges_into_the_results_file(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"gan_reuse_compute_ratio": 0.51, "scale": {"sizes": {"256": {"trials": 256}}}}))
    scale.write_scale({"trials": 64, "wall_s": 1.0}, path)
    merged = json.loads(path.read_text())
    assert merged["gan_reuse_compute_ratio"] == 0.51
    assert set(merged["scale"]["sizes"]) == {"64", "256"} and merged["scale"]["sizes"]["64"]["wall_s"] == 1.0
    assert merged["scale"]["ran"] == [64, 256] and merged["scale"]["remaining"] == [1024]


def test_requests_are_divided_by_trials_and_counted_apart_for_trial_runs():
    requests = [("POST", "r", "a", 100, 0), ("POST", "r", "b", 50, 0), ("GET", "r", None, 10, 0)]
    got = scale.traffic_per_trial(requests, {"a", "b"}, trials=2)
    assert got["requests_per_trial"] == 1.5 and got["bytes_up_per_trial"] == 80
    assert got["trial_run_requests_per_trial"] == 1.0 and got["trial_run_bytes_up_per_trial"] == 75
