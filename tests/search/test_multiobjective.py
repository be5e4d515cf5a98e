"""Multi-objective search: metric/mode lists in the space file, the Pareto front checked against a
brute-force reference, and one smoke search end to end that logs pareto.csv."""

import csv
import io
import itertools
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from gantune.search.plots import pareto_mask, pareto_rows
from gantune.search.space import SpaceError, load_space, make_search_settings

ROOT = Path(__file__).resolve().parents[2]


def dominates(a, b, modes) -> bool:
    """Plain reference: a is at least as good as b everywhere and better somewhere."""
    better_or_equal = all((x >= y) if m == "max" else (x <= y) for x, y, m in zip(a, b, modes))
    strictly = any((x > y) if m == "max" else (x < y) for x, y, m in zip(a, b, modes))
    return better_or_equal and strictly


def test_pareto_front_of_hand_made_points():
    points = [(0.90, 0.50), (0.80, 0.80), (0.85, 0.60), (0.70, 0.90), (0.80, 0.70), (0.90, 0.40), (0.80, 0.80)]
    assert pareto_mask(np.array(points), ["max", "max"]).tolist() == [True, True, True, True, False, False, True]
    # min on the second objective turns the front around
    assert pareto_mask(np.array(points), ["max", "min"]).tolist() == [False, False, False, False, False, True, False]
    # nan rows are never on the front and do not dominate
    assert pareto_mask(np.array([(0.9, math.nan), (0.5, 0.5)]), ["max", "max"]).tolist() == [False, True]


def test_pareto_front_matches_brute_force_on_random_points():
    rng = np.random.default_rng(0)
    for modes in itertools.product(("max", "min"), repeat=3):
        values = rng.integers(0, 5, size=(30, 3)).astype(float)  # ties on purpose
        expected = [not any(dominates(values[j], values[i], modes) for j in range(30)) for i in range(30)]
        assert pareto_mask(values, modes).tolist() == expected


def test_pareto_rows_keep_leaderboard_order():
    rows = [{"trial_id": "a", "val_auc": 0.9, "val_sensitivity": 0.3},
            {"trial_id": "b", "val_auc": 0.8, "val_sensitivity": 0.2},
            {"trial_id": "c", "val_auc": 0.7, "val_sensitivity": 0.9}]
    assert [r["trial_id"] for r in pareto_rows(rows, ["val_auc", "val_sensitivity"], ["max", "max"])] == ["a", "c"]


def write_space(tmp_path, search: dict) -> Path:
    raw = yaml.safe_load((ROOT / "spaces" / "demo.yaml").read_text())
    raw["data"]["path"] = str(ROOT / "data" / "breastmnist.npz")
    raw["search"] = {**raw["search"], **search}
    path = tmp_path / "multi.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_space_lists_become_objectives_with_fifo(tmp_path):
    space = load_space(write_space(tmp_path, {"metric": ["val_auc", "val_sensitivity"], "mode": ["max", "max"]}))
    s = space.search
    assert s.multi_objective and s.objectives == ("val_auc", "val_sensitivity") and s.objective_modes == ("max", "max")
    assert (s.metric, s.mode, s.scheduler) == ("val_auc", "max", "fifo")  # the first metric ranks the leaderboard
    resolved = space.resolved()
    assert "ASHA" in resolved["notes"][0]
    assert make_search_settings("resolved", dict(resolved["search"])) == s  # a resolved space loads back
    one_mode = load_space(write_space(tmp_path, {"metric": ["val_auc", "val_specificity"], "mode": "min"})).search
    assert one_mode.objective_modes == ("min", "min")
    single = load_space(ROOT / "spaces" / "demo.yaml").search
    assert (
        not single.multi_objective
        and single.scheduler == "asha"
        and "notes" not in load_space(ROOT / "spaces" / "demo.yaml").resolved()
    )


@pytest.mark.parametrize("search, key", [
    ({"metric": ["val_auc", "val_sensitivity"], "mode": ["max"]}, "'search.mode' needs one mode per metric"),
    ({"metric": "val_auc", "mode": ["max", "max"]}, "'search.mode' is a list"),
    ({"metric": ["val_auc", "val_auc"]}, "'search.metric' must be"),
    ({"metric": ["val_auc", "val_f1"], "mode": ["max", "up"]}, "'search.mode' must be max or min"),
])
def test_bad_objectives_name_the_key(tmp_path, search, key):
    with pytest.raises(SpaceError, match=key):
        load_space(write_space(tmp_path, search))


def test_searcher_is_multi_objective_and_failures_report_every_objective(tmp_path):
    from gantune.search.tuner import make_scheduler, make_searcher
    from gantune.trainables.gans import DivergedError
    from gantune.trainables.pipeline import StudySettings, failure_report
    from ray.tune.schedulers import FIFOScheduler

    space = load_space(write_space(tmp_path, {"metric": ["val_auc", "val_sensitivity"], "mode": ["max", "min"]}))
    searcher = make_searcher(space, seed=0).searcher
    assert searcher.metric == ["val_auc", "val_sensitivity"]
    assert [d.name for d in searcher._ot_study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert isinstance(make_scheduler(space), FIFOScheduler)
    settings = StudySettings(fixed={}, data=None, tracking_uri="", experiment_id="", parent_run_id="",
                             seed=0, cpus_per_trial=1, gpus_per_trial=0,
                             objectives=(("val_auc", "max"), ("val_sensitivity", "min")))
    report = failure_report(DivergedError("x"), settings, 1)
    assert report["val_auc"] == 0.0 and report["val_sensitivity"] == float("inf")


@pytest.mark.e2e
@pytest.mark.timeout(600)
def test_smoke_multi_objective_search_logs_pareto_front(tmp_path):
    from mlflow.tracking import MlflowClient

    space = write_space(tmp_path, {"metric": ["val_auc", "val_sensitivity"], "mode": ["max", "max"]})
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "gantune.search.cli",
            "search",
            str(space),
            "--smoke-test",
            "--experiment",
            "mo",
            "--quiet",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("mo")
    parent = client.search_runs([experiment.experiment_id], "tags.`gantune.role` = 'search'")[0]
    names = {a.path for a in client.list_artifacts(parent.info.run_id)} | {
        a.path for a in client.list_artifacts(parent.info.run_id, "plots")
    }
    assert {"pareto.csv", "plots/pareto_front.png"} <= names
    pareto = list(
        csv.DictReader(
            io.StringIO(Path(client.download_artifacts(parent.info.run_id, "pareto.csv", str(tmp_path))).read_text())
        )
    )
    trials = client.search_runs([experiment.experiment_id], "tags.`gantune.role` = 'trial'")
    points = {
        t.data.tags["gantune.trial_id"]: (t.data.metrics["val_auc"], t.data.metrics["val_sensitivity"]) for t in trials
    }
    ids = list(points)
    expected = {i for i, keep in zip(ids, pareto_mask(np.array([points[i] for i in ids]), ["max", "max"])) if keep}
    assert {r["trial_id"] for r in pareto} == expected
    assert "val_sensitivity" in proc.stdout  # the leaderboard shows the second objective
    for t in trials:  # FIFO: every trial ran all its folds
        assert t.data.metrics["folds_done"] == 2
    if (ROOT / "search" / "report.py").exists():
        assert "plots/ratio_vs_auc.png" in names  # drawn by search/report.py at the end of the search
