"""The promotion gate against a real SQLite MLflow store whose search, trial and evaluation runs
are crafted here (MlflowClient), so which trial must pass or be refused, and why, is known in
advance. The generator is a stand-in `generator/MLmodel` file: the gate only checks it exists."""

from __future__ import annotations

import numpy as np
import pytest
from gantune.search import cli
from gantune.search.promote import PromoteError, promote
from gantune.search.stats import fold_delta
from mlflow.tracking import MlflowClient

FOLDS = 3
pytestmark = pytest.mark.timeout(300)


def make_search(client, name, trials, evaluations=(), rank_by=None):
    """trials: {trial_id: (fold values, baseline?, folds_done)}; evaluations: paired_delta_auc values."""
    experiment_id = client.create_experiment(name)
    parent = client.create_run(experiment_id, tags={"gantune.role": "search"}).info.run_id
    settings = {"metric": "val_auc", "mode": "max", **({"rank_by": rank_by} if rank_by else {})}
    client.log_dict(parent, {"search": settings, "fixed": {"data.folds": FOLDS}}, "config/resolved_space.json")
    ids = {}
    for trial_id, (folds, baseline, done) in trials.items():
        tags = {"mlflow.parentRunId": parent, "gantune.role": "trial", "gantune.trial_id": trial_id}
        if baseline:
            tags["gantune.baseline"] = "real_only"
        run_id = client.create_run(experiment_id, tags=tags).info.run_id
        for i, v in enumerate(folds[:done]):
            client.log_metric(run_id, "fold_val_auc", v, step=i)
        client.log_metric(run_id, "val_auc", float(np.mean(folds[:done])))
        client.log_metric(run_id, "folds_done", done)
        if not baseline:
            client.log_text(run_id, "flavors: {}\n", "generator/MLmodel")
        client.set_terminated(run_id, status="FINISHED")
        ids[trial_id] = run_id
    for delta in evaluations:
        run_id = client.create_run(
            experiment_id, tags={"gantune.role": "evaluation", "mlflow.parentRunId": parent}
        ).info.run_id
        client.log_metric(run_id, "paired_delta_auc", delta)
        client.log_metric(run_id, "paired_delta_auc_ci_low", delta - 0.05)
        client.log_metric(run_id, "paired_delta_auc_ci_high", delta + 0.05)
        client.log_param(run_id, "better_baseline", "trivial_aug")
        client.set_terminated(run_id)
    client.set_terminated(parent, status="FINISHED")
    return ids


BASE = [0.80, 0.81, 0.79]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gate")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    client = MlflowClient(uri)
    ids = {
        "win": make_search(
            client,
            "win",
            {
                "base": (BASE, True, FOLDS),
                "gan": ([0.83, 0.84, 0.82], False, FOLDS),
                # the best mean, but stopped after one fold by the scheduler: never ranked
                "stopped": ([0.99, 0.5, 0.5], False, 1),
            },
            evaluations=[0.012],
        ),
        "lose": make_search(client, "lose", {"base": (BASE, True, FOLDS), "gan": ([0.79, 0.80, 0.78], False, FOLDS)}),
        # a higher mean than the baseline (the old gate let it through) hiding one collapsed fold
        "collapsed": make_search(
            client, "collapsed", {"base": (BASE, True, FOLDS), "gan": ([0.95, 0.94, 0.60], False, FOLDS)}
        ),
        "tested": make_search(
            client,
            "tested",
            {"base": (BASE, True, FOLDS), "gan": ([0.83, 0.84, 0.82], False, FOLDS)},
            evaluations=[0.004, -0.040],
        ),
        "nobase": make_search(client, "nobase", {"gan": ([0.83, 0.84, 0.82], False, FOLDS)}),
        # lucky: one great fold; steady: a smaller but consistent gain
        "lcb": make_search(
            client,
            "lcb",
            {
                "base": ([0.80, 0.80, 0.80], True, FOLDS),
                "lucky": ([0.97, 0.80, 0.81], False, FOLDS),
                "steady": ([0.84, 0.85, 0.84], False, FOLDS),
            },
            rank_by="paired_lcb",
        ),
    }
    return uri, client, ids


def test_gate_accepts_a_crafted_winning_trial_and_ignores_incomplete_ones(store, capsys):
    uri, client, ids = store
    choice, version = promote(uri, "win")
    assert choice.best.info.run_id == ids["win"]["gan"] and choice.allowed
    assert choice.paired.mean == pytest.approx(np.mean(np.subtract([0.83, 0.84, 0.82], BASE)))
    tags = client.get_model_version("win-generator", version.version).tags
    assert tags["gantune.forced"] == "false" and tags["gantune.beats_baseline"] == "true"
    assert float(tags["gantune.paired_delta_val_auc_vs_real_only"]) == pytest.approx(0.03)
    assert cli.main(["promote", "--experiment", "win", "--tracking-uri", uri, "--alias", "cli"]) == 0
    out = capsys.readouterr().out
    assert "promoted because it passes the gate" in out and "+0.0300" in out and "+0.0120" in out


@pytest.mark.parametrize("name, reason", [
    ("lose", "[REFUSED] paired folds: paired per-fold difference to real_only trial base -0.0100"),
    ("collapsed", "[REFUSED] worst fold: worst fold 0.6000 vs the baseline's 0.7900"),
    ("tested", "[REFUSED] test evaluation:"),
    ("nobase", "[REFUSED] baseline: the search has no real_only trial that finished all 3 folds"),
])
def test_gate_refuses_with_the_numbers_and_registers_nothing(store, capsys, name, reason):
    uri, client, _ = store
    with pytest.raises(PromoteError) as err:
        promote(uri, name)
    assert reason in str(err.value)
    assert client.search_registered_models(f"name = '{name}-generator'") == []
    assert cli.main(["promote", "--experiment", name, "--tracking-uri", uri]) == cli.EXIT_USAGE
    assert reason in capsys.readouterr().err


def test_a_negative_evaluation_refuses_even_a_trial_that_wins_in_cross_validation(store):
    uri, _, _ = store
    with pytest.raises(PromoteError) as err:
        promote(uri, "tested")
    text = str(err.value)
    assert "[ok] paired folds" in text and "[ok] worst fold" in text
    assert "paired_delta_auc -0.0400" in text and "paired_delta_auc +0.0040" in text


def test_force_registers_and_records_it_on_the_version(store, capsys):
    uri, client, ids = store
    assert cli.main(["promote", "--experiment", "collapsed", "--tracking-uri", uri, "--force"]) == 0
    assert "FORCED past the gate" in capsys.readouterr().out
    version = client.get_model_version_by_alias("collapsed-generator", "champion")
    assert version.run_id == ids["collapsed"]["gan"]
    assert version.tags["gantune.forced"] == "true" and '"passed": false' in version.tags["gantune.gate"]


def test_rank_by_paired_lcb_prefers_the_steady_gain(store):
    uri, _, ids = store
    by_mean, _ = promote(uri, "lcb", rank_by="mean", model_name="lcb-mean")
    assert by_mean.best.info.run_id == ids["lcb"]["lucky"]  # mean gain 0.06 > 0.043
    by_lcb, _ = promote(uri, "lcb", model_name="lcb-default")  # the space's search.rank_by
    assert by_lcb.rank_by == "paired_lcb" and by_lcb.best.info.run_id == ids["lcb"]["steady"]
    base = [0.80, 0.80, 0.80]
    lucky, steady = (
        fold_delta([0.97, 0.80, 0.81], base, test_train_ratio=0.5),
        fold_delta([0.84, 0.85, 0.84], base, test_train_ratio=0.5),
    )
    assert steady.lcb > lucky.lcb and lucky.mean > steady.mean  # why: the reference numbers
    assert by_lcb.paired.lcb == pytest.approx(steady.lcb)


def test_a_refusal_says_what_the_alias_still_points_to(store, capsys):
    uri, client, ids = store
    with pytest.raises(PromoteError) as err:
        promote(uri, "collapsed", model_name="held")  # a model of its own: the store is shared by the module
    assert "no version of held holds @champion" in str(err.value)
    promote(uri, "collapsed", model_name="held", force=True)  # an earlier, forced champion
    args = ["promote", "--experiment", "collapsed", "--tracking-uri", uri, "--model-name", "held"]
    assert cli.main(args) == cli.EXIT_USAGE
    text = capsys.readouterr().err
    assert (f"@champion stays on held version 1 (forced past the gate), trial run "
            f"{ids['collapsed']['gan']}") in text
