"""Issue 27 in the search: the uses of synthetic images are searchable in a space file (per-class
ratios as one key per class), zeroed in the baselines, shown in the leaderboard (the acceptance
rate of selection) and carried into `evaluate`'s refits."""

from __future__ import annotations

import math
from pathlib import Path

import optuna.distributions as od
import pytest
import yaml

from gantune.search import evaluate as ev
from gantune.search.leaderboard import TrialResult, format_table, leaderboard_columns, leaderboard_rows
from gantune.search.space import SpaceError, load_space
from gantune.trainables.config import TrialConfig

ROOT = Path(__file__).resolve().parents[2]
USES = ROOT / "spaces" / "breastmnist_uses.yaml"


def space_file(tmp_path, synth: dict, baselines=("real_only",)) -> Path:
    path = tmp_path / "space.yaml"
    doc = {"name": "uses", "data": {"folds": 3}, "synth": {"ratio": {"uniform": [0.0, 1.0]}, **synth},
           "search": {"baselines": list(baselines)}}
    path.write_text(yaml.safe_dump(doc))
    return path


def test_the_uses_space_searches_every_use_with_one_key_per_class_ratio():
    space = load_space(USES)
    for key in ("synth.use", "synth.pretrain_share", "synth.select", "synth.select_confidence",
                "synth.select_distance", "synth.classes", "synth.class_ratio.0"):
        assert key in space.domains, key
    dists = space.optuna_space()
    assert dists["synth.use"] == od.CategoricalDistribution(["mix", "pretrain", "mix+pretrain"])
    assert dists["synth.class_ratio.0"] == od.FloatDistribution(0.0, 2.0)
    assert "balance" in space.domains["synth.classes"]["choice"]
    # Every baseline adds no synthetic image: the per-class ratio is zeroed with synth.ratio.
    for point in space.baseline_points():
        assert point["synth.class_ratio.0"] == 0.0 and point["synth.ratio"] == 0.0
        assert TrialConfig.from_flat({**space.fixed, **point}).baseline_name() is not None


def test_class_ratio_mapping_fixed_and_searched(tmp_path):
    space = load_space(space_file(tmp_path, {"class_ratio": {0: {"uniform": [0.0, 2.0]}, 1: 0.0}}))
    assert space.domains["synth.class_ratio.0"] == {"uniform": [0.0, 2.0]}
    assert space.fixed["synth.class_ratio.1"] == 0.0
    cfg = TrialConfig.from_flat({**space.fixed, "synth.ratio": 0.3, "synth.class_ratio.0": 1.5})
    assert cfg.synth.ratios(2) == [1.5, 0.0]


@pytest.mark.parametrize("synth, message", [
    ({"class_ratio": [1.0, 2.0]}, "'synth.class_ratio' must be a mapping of a class index"),
    ({"class_ratio": {"uniform": [0, 1]}}, "'synth.class_ratio' must be a mapping of a class index"),
    ({"class_ratio": {"malignant": 1.0}}, "'synth.class_ratio.malignant': the part after"),
    ({"class_ratio": {0: -1.0}}, "'synth.class_ratio.0' must be >= 0, got -1.0"),
    ({"class_ratio": {0: {"uniform": [-1.0, 1.0]}}}, "'synth.class_ratio.0' must be >= 0"),
    ({"class_ratio": {0: 1.0}}, "(and every 'synth.class_ratio.<class>' searched with 0 in its range"),
    ({"select": "confident"}, "'synth.select' must be one of"),
    ({"pretrain_share": {"uniform": [0.0, 0.5]}}, "'synth.pretrain_share' must be in (0, 1)"),
])
def test_bad_use_settings_name_the_file_and_key(tmp_path, synth, message):
    path = space_file(tmp_path, synth)
    with pytest.raises(SpaceError) as err:
        load_space(path)
    assert str(path) in str(err.value) and message in str(err.value)


def test_leaderboard_shows_the_acceptance_rate_and_the_searched_uses(tmp_path):
    space = load_space(space_file(tmp_path, {"select": {"choice": ["none", "confidence"]},
                                             "use": {"choice": ["mix", "pretrain"]},
                                             "class_ratio": {0: {"uniform": [0.0, 2.0]}}}))
    results = [
        TrialResult({"trial_id": "a", "val_auc": 0.8, "folds_done": 3, "synth_accept_rate": 0.42},
                    {"synth.ratio": 0.5, "synth.select": "confidence", "synth.use": "pretrain",
                     "synth.class_ratio.0": 1.0}, False),
        TrialResult({"trial_id": "b", "val_auc": 0.7, "folds_done": 3},
                    {"synth.ratio": 0.0, "synth.select": "none", "synth.use": "mix", "synth.class_ratio.0": 0.0},
                    False),
    ]
    rows = leaderboard_rows(results, space)
    columns = leaderboard_columns(space)
    assert {"synth_accept_rate", "synth.use", "synth.select", "synth.class_ratio.0"} <= set(columns)
    assert rows[0]["synth_accept_rate"] == 0.42 and math.isnan(rows[1]["synth_accept_rate"])
    assert rows[1]["baseline"] == "real_only"
    assert "0.42" in format_table(rows, columns) and "pretrain" in format_table(rows, columns)
    plain = load_space(space_file(tmp_path, {}))
    assert "synth_accept_rate" not in leaderboard_columns(plain)


def test_evaluate_refits_the_uses_as_searched_and_its_baselines_add_no_image():
    best = TrialConfig.from_flat({"synth.ratio": 0.0, "synth.class_ratio.0": 1.5, "synth.use": "pretrain",
                                  "synth.select": "confidence+feature", "synth.classes": "balance"})
    again = TrialConfig.from_flat(best.to_flat())  # evaluate rebuilds the trial from trial_config.json
    assert again == best
    configs = ev.method_configs(again, {"classic_aug": again.augment, "trivial_aug": again.augment})
    assert configs["best_config"].synth == best.synth
    for name in ev.BASELINES:
        assert not configs[name].synth.adds_images, name
    assert configs["real_only"].baseline_name() == "real_only"
