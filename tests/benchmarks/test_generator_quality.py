"""benchmarks/generator_quality.py: every family entry is a valid configuration, the step count
follows the budget, and the best entry is chosen as documented (no training is timed here)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # benchmarks/ is a folder of the repository, not of the package

from benchmarks import generator_quality as gq  # noqa: E402
from benchmarks.gen_metrics_cost import space_config  # noqa: E402


def test_every_family_entry_is_a_valid_configuration_of_the_recipe():
    base = space_config(str(ROOT / "spaces" / "breastmnist.yaml"), {"synth.ratio": 1.0})
    families = {gq.space_with(base, overrides).gan.family for overrides in gq.FAMILIES.values()}
    assert families == {"dcgan", "egan", "daegan"}
    assert gq.space_with(base, gq.FAMILIES["daegan+simgan"]).synth.refiner == "simgan"


def test_steps_scale_with_the_budget(monkeypatch):
    clock = iter([0.0, 2.0])  # the calibration's 4 steps take 2 CPU seconds: 0.5 s a step
    monkeypatch.setattr(gq, "cpu_seconds", lambda: next(clock))
    monkeypatch.setattr(gq.trial, "train_gans", lambda *a, **k: {})
    base = space_config(str(ROOT / "spaces" / "breastmnist.yaml"), {"synth.ratio": 1.0})
    train = type("Train", (), {"class_counts": lambda self: [10, 10]})()
    assert gq.steps_for(base, train, None, 0, budget=30.0) == 60


def test_best_entry_is_the_highest_tstr_auc_ignoring_nan():
    entries = [{"tstr_auc": 0.8, "fd_ratio": 2.0}, {"tstr_auc": float("nan"), "fd_ratio": 1.0},
               {"tstr_auc": 0.8, "fd_ratio": 1.5}, {"tstr_auc": 0.7, "fd_ratio": 1.1}]
    assert gq.best_entry(entries) is entries[2]
    assert gq.best_entry([{"tstr_auc": math.nan, "fd_ratio": 1.0}]) is None
