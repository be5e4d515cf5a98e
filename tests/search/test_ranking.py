"""Leaderboard ranking: complete trials before ones the scheduler stopped, and `search.rank_by:
paired_lcb` ordering by the paired per-fold lower bound to real_only (checked against
search.stats.fold_delta with the Nadeau-Bengio ratio by hand); the space key is validated."""

from __future__ import annotations

import math

import pytest
import yaml

from gantune.search.leaderboard import TrialResult, leaderboard_columns, leaderboard_rows
from gantune.search.space import SpaceError, load_space
from gantune.search.stats import fold_delta

BASE = [0.80, 0.80, 0.80]


def space(tmp_path, **search):
    doc = {"name": "rank", "data": {"folds": 3}, "synth": {"ratio": {"uniform": [0.0, 2.0]}},
           "search": {"metric": "val_auc", "mode": "max", "baselines": ["real_only"], **search}}
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(doc))
    return load_space(path)


def trial(trial_id, folds, ratio=1.0, done=3):
    metrics = {"trial_id": trial_id, "val_auc": sum(folds[:done]) / done, "folds_done": done,
               **{f"fold{i}_val_auc": v for i, v in enumerate(folds[:done])}}
    return TrialResult(metrics, {"synth.ratio": ratio}, False)


RESULTS = [
    trial("base", BASE, ratio=0.0),
    trial("lucky", [0.97, 0.80, 0.81]),  # mean gain 0.06 from one fold
    trial("steady", [0.84, 0.85, 0.84]),  # mean gain 0.043, every fold
    trial("stopped", [0.99, 0.5, 0.5], done=1),  # best mean, one fold: ranks after every complete trial
]


def test_mean_ranking_puts_complete_trials_first(tmp_path):
    rows = leaderboard_rows(RESULTS, space(tmp_path))
    assert [r["trial_id"] for r in rows] == ["lucky", "steady", "base", "stopped"]
    assert "paired_lcb_val_auc_vs_real_only" not in leaderboard_columns(space(tmp_path))


def test_paired_lcb_ranking_prefers_the_steady_gain(tmp_path):
    s = space(tmp_path, rank_by="paired_lcb")
    rows = leaderboard_rows(RESULTS, s)
    assert [r["trial_id"] for r in rows] == ["steady", "base", "lucky", "stopped"]
    by_id = {r["trial_id"]: r for r in rows}
    for trial_id, folds in (("steady", [0.84, 0.85, 0.84]), ("lucky", [0.97, 0.80, 0.81])):
        expected = fold_delta(folds, BASE, test_train_ratio=1 / 2).lcb  # 3-fold: n_val / n_train = 1/2
        assert by_id[trial_id]["paired_lcb_val_auc_vs_real_only"] == pytest.approx(expected)
    assert by_id["base"]["paired_lcb_val_auc_vs_real_only"] == 0.0
    assert math.isnan(by_id["stopped"]["paired_lcb_val_auc_vs_real_only"])
    assert "paired_lcb_val_auc_vs_real_only" in leaderboard_columns(s)


def test_rank_by_is_validated(tmp_path):
    with pytest.raises(SpaceError, match="'search.rank_by' must be one of \\['mean', 'paired_lcb'\\], got 'lcb'"):
        space(tmp_path, rank_by="lcb")
    with pytest.raises(SpaceError, match="add real_only to 'search.baselines'"):
        space(tmp_path, rank_by="paired_lcb", baselines=["classic_aug"])
    assert space(tmp_path, rank_by="paired_lcb").resolved()["search"]["rank_by"] == "paired_lcb"


def test_leaderboard_shows_the_headline_generative_metrics_when_trials_log_them(tmp_path):
    plain = space(tmp_path)
    assert not {"gen_fd_ratio", "gen_tstr_auc", "gen_memorized"} & set(leaderboard_columns(plain))
    doc = yaml.safe_load((tmp_path / "space.yaml").read_text())
    doc["synth"]["gen_metrics"] = True
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(doc))
    with_gen = load_space(tmp_path / "space.yaml")
    columns = leaderboard_columns(with_gen)
    assert columns[columns.index("val_auc_min_fold") + 1:][:3] == ["gen_fd_ratio", "gen_tstr_auc", "gen_memorized"]
    gan = TrialResult({**trial("gan", [0.9] * 3).metrics, "gen_fd_ratio": 1.7, "gen_tstr_auc": 0.81,
                       "gen_memorized": 0.02}, {"synth.ratio": 1.0}, False)
    rows = {r["trial_id"]: r for r in leaderboard_rows([gan, RESULTS[0]], with_gen)}
    assert (rows["gan"]["gen_fd_ratio"], rows["gan"]["gen_tstr_auc"], rows["gan"]["gen_memorized"]) == (1.7, 0.81, 0.02)
    assert math.isnan(rows["base"]["gen_tstr_auc"])  # a baseline draws no synthetic image
