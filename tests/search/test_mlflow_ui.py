"""The MLflow UI opening on the runs: the page gantune's app serves, the experiment's tags and
runs view, and per-fold values as one metric with step = fold read back for pairing."""

from __future__ import annotations

import json

import pytest
from mlflow.tracking import MlflowClient

from gantune.search import mlflow_ui
from gantune.search.leaderboard import fold_values
from gantune.search.runs import add_fold_values
from gantune.search.tracking import EXPERIMENT_KIND_TAG, ensure_experiment, runs_page_url, runs_view, set_runs_view

RESOLVED = {"name": "demo", "search": {"metric": "val_auc", "mode": "max"}, "fixed": {},
            "searched": {"gan.lr": {"loguniform": [1e-4, 1e-3]}, "synth.ratio": {"uniform": [0.0, 2.0]}}}


@pytest.fixture()
def client(tmp_path):
    return MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")


def test_the_page_sets_the_model_training_default_before_mlflows_scripts():
    html = ('<!doctype html><html><head><meta charset="utf-8"/>'
            '<script defer src="static/js/main.js"></script></head></html>')
    page = mlflow_ui.with_default_mode(html)
    ours, theirs = page.index(mlflow_ui.WORKFLOW_KEY), page.index("static/js/main.js")
    assert ours < theirs  # MLflow reads the key when its bundle starts
    assert "'machine_learning'" in page and "if(!localStorage.getItem(W))" in page  # a choice made is kept
    assert repr(mlflow_ui.ASSISTANT_KEY) in page and "if(!localStorage.getItem(A))" in page
    assert repr(mlflow_ui.STATE_KEY[0]) in page and "if(v!==null" in page  # only a state the person has not got
    assert mlflow_ui.VIEW_TAG == "mlflow.sharedViewState.gantune"  # the UI's shared-view tag prefix + key


def test_the_ui_bundle_still_reads_the_mode_and_views_where_the_app_writes_them():
    """Guards the MLflow upgrade: the keys search/mlflow_ui.py relies on, in the installed bundle."""
    from pathlib import Path

    import mlflow

    js = Path(mlflow.__file__).parent / "server" / "js" / "build" / "static" / "js"
    main = next(js.glob("main.*.js")).read_text(encoding="utf-8")
    assert 'key:"mlflow.workflowType",version:1' in main and "`${e}_v${t}`" in main
    assert 'U="viewStateShareKey",$="mlflow.sharedViewState."' in main
    assert 'reactComponentStateKey="ReactComponentState"' in main and '["MLflowLocalStorage",' in main
    assert 'key:"mlflow.assistant.fab.autoOpenedOnFirstLoad",version:1' in main
    assert 'DATE:"attributes.start_time"' in main  # the one sort order in which the table nests child runs


def test_experiments_are_tagged_model_training_new_and_existing(client):
    existing = client.create_experiment("old")
    assert ensure_experiment(client, "old", "sqlite:///x") == existing
    new = ensure_experiment(client, "new", "sqlite:///x")
    for experiment_id in (existing, new):
        assert client.get_experiment(experiment_id).tags[EXPERIMENT_KIND_TAG[0]] == "custom_model_development"


def test_the_runs_view_shows_the_metric_its_worst_fold_the_searched_params_and_the_baseline(client):
    view = runs_view(RESOLVED)
    assert view["selectedColumns"][:4] == ["metrics.`val_auc`", "metrics.`val_auc_min_fold`",
                                           "params.`gan.lr`", "params.`synth.ratio`"]
    assert "tags.`gantune.baseline`" in view["selectedColumns"]
    assert view["orderByKey"] == "attributes.start_time" and view["orderByAsc"] is False  # newest, trials nested
    experiment_id = ensure_experiment(client, "demo", "sqlite:///x")
    set_runs_view(client, experiment_id, RESOLVED)
    assert json.loads(client.get_experiment(experiment_id).tags[mlflow_ui.VIEW_TAG]) == view
    url = runs_page_url("http://127.0.0.1:5000/", experiment_id)
    assert url == (f"http://127.0.0.1:5000/#/experiments/{experiment_id}/runs"
                   "?workflowType=machine_learning&viewStateShareKey=gantune")


def test_per_fold_values_logged_with_step_fold_are_paired_by_fold(client):
    experiment_id = client.create_experiment("folds")
    run_id = client.create_run(experiment_id).info.run_id
    for fold, value in [(0, 0.70), (2, 0.90), (1, 0.10), (1, 0.80)]:  # fold 1 retried: the later value counts
        client.log_metric(run_id, "fold_val_auc", value, step=fold)
    run = add_fold_values(client, [client.get_run(run_id)], "val_auc")[0]
    assert fold_values(run.data.metrics, "val_auc", 3) == [0.70, 0.80, 0.90]
    assert fold_values(run.data.metrics, "val_auc", 4) is None  # a fold missing: not complete
