"""The promotion gate against a real SQLite MLflow store whose search, trial and evaluation runs
are crafted here (MlflowClient), so which trial must pass or be refused, and why, is known in
advance. The generator is a stand-in `generator/MLmodel` file: the gate only checks it exists."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from gantune.api import resolve_space
from gantune.search import cli
from gantune.search.promote import PromoteError, promote
from gantune.search.stats import fold_delta
from gantune.search.tracking import start_parent_run
from mlflow.tracking import MlflowClient

FOLDS = 3
pytestmark = pytest.mark.timeout(300)


def make_search(client, name, trials, evaluations=(), rank_by=None, smoke=False):
    """trials: {trial_id: (fold values, baseline?, folds_done)}; evaluations: (trial id it refitted,
    {metric: value}) pairs, logged as `gantune evaluate` logs them, oldest first."""
    experiment_id = client.create_experiment(name)
    tags = {"gantune.role": "search", **({"gantune.smoke_test": "true"} if smoke else {})}
    parent = client.create_run(experiment_id, tags=tags).info.run_id
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
    for i, (trial_id, metrics) in enumerate(evaluations):
        run_id = client.create_run(
            experiment_id, start_time=1_000 + i, tags={"gantune.role": "evaluation", "mlflow.parentRunId": parent}
        ).info.run_id
        for key, value in metrics.items():
            client.log_metric(run_id, key, value)
        client.log_param(run_id, "source_trial_id", trial_id)
        client.log_param(run_id, "source_trial_run_id", ids[trial_id])
        client.log_param(run_id, "better_baseline", "trivial_aug")
        client.set_terminated(run_id)
        ids[f"evaluation{i}"] = run_id
    client.set_terminated(parent, status="FINISHED")
    return ids


def t_interval(delta: float) -> dict:
    """What an older `gantune evaluate` logged: the seed-level paired t interval only."""
    return {"paired_delta_auc": delta, "paired_delta_auc_ci_low": delta - 0.05,
            "paired_delta_auc_ci_high": delta + 0.05}


def hierarchical(low: float, mean: float, high: float, **older) -> dict:
    """What `gantune evaluate` logs now: the hierarchical interval at full size (and the older ones)."""
    return {"frac_1_delta_auc_lo": low, "frac_1_delta_auc": mean, "frac_1_delta_auc_hi": high, **older}


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
            evaluations=[("gan", hierarchical(0.002, 0.012, 0.022))],
        ),
        "lose": make_search(client, "lose", {"base": (BASE, True, FOLDS), "gan": ([0.79, 0.80, 0.78], False, FOLDS)}),
        # a higher mean than the baseline (the old gate let it through) hiding one collapsed fold
        "collapsed": make_search(
            client, "collapsed", {"base": (BASE, True, FOLDS), "gan": ([0.95, 0.94, 0.60], False, FOLDS)}
        ),
        # wins in cross-validation (bound +0.03), but its newest evaluation's interval reaches below 0
        "tested": make_search(
            client,
            "tested",
            {"base": (BASE, True, FOLDS), "gan": ([0.83, 0.84, 0.82], False, FOLDS)},
            evaluations=[("gan", t_interval(0.004)), ("gan", t_interval(-0.040))],
        ),
        "nobase": make_search(client, "nobase", {"gan": ([0.83, 0.84, 0.82], False, FOLDS)}),
        # lucky: one great fold (mean +0.06, Nadeau-Bengio bound -0.194); steady: a smaller but consistent gain
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
        # the lucky trial is the pick (by mean); a clearly positive evaluation of ANOTHER trial is no evidence for it
        "elsewhere": make_search(
            client,
            "elsewhere",
            {
                "base": ([0.80, 0.80, 0.80], True, FOLDS),
                "lucky": ([0.97, 0.80, 0.81], False, FOLDS),
                "steady": ([0.84, 0.85, 0.84], False, FOLDS),
            },
            evaluations=[("steady", hierarchical(0.03, 0.05, 0.07))],
        ),
        # the same lucky pick, with a test evaluation of its own whose lower bound is above 0: the stronger evidence
        "tested_lucky": make_search(
            client,
            "tested_lucky",
            {"base": ([0.80, 0.80, 0.80], True, FOLDS), "lucky": ([0.97, 0.80, 0.81], False, FOLDS)},
            evaluations=[("lucky", hierarchical(0.011, 0.030, 0.049, **t_interval(0.03)))],
        ),
        # an evaluation of the pick that logged no interval at all
        "unmeasured": make_search(
            client,
            "unmeasured",
            {"base": (BASE, True, FOLDS), "gan": ([0.83, 0.84, 0.82], False, FOLDS)},
            evaluations=[("gan", {"test_best_config_auc_mean": 0.9})],
        ),
        # only the bootstrap interval (an evaluation from before the hierarchical one): it decides, with its numbers
        "bootstrapped": make_search(
            client,
            "bootstrapped",
            {"base": (BASE, True, FOLDS), "gan": ([0.83, 0.84, 0.82], False, FOLDS)},
            evaluations=[("gan", {"ensemble_delta_auc": 0.01, "paired_delta_auc_bootstrap_ci_low": -0.004,
                                  "paired_delta_auc_bootstrap_ci_high": 0.024, **t_interval(0.06)})],
        ),
        "smoke": make_search(
            client, "smoke", {"base": (BASE, True, FOLDS), "gan": ([0.83, 0.84, 0.82], False, FOLDS)}, smoke=True
        ),
    }
    return uri, client, ids


def refused(uri, name, **kw) -> str:
    with pytest.raises(PromoteError) as err:
        promote(uri, name, **kw)
    return str(err.value)


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
    assert "promoted because it passes the gate" in out
    # the evaluation of this trial decides, on its lower bound; the cross-validation bound is context
    assert "[ok] test evaluation: lower bound +0.0020 (frac_1_delta_auc_lo)" in out
    assert "+0.0120 [+0.0020, +0.0220]" in out and f"evaluation run {ids['win']['evaluation0']}" in out
    assert "[info] paired folds: one-sided 95% lower bound +0.0300" in out


@pytest.mark.parametrize("name, reason", [
    ("lose", "[REFUSED] paired folds: one-sided 95% lower bound -0.0100 (Nadeau-Bengio corrected)"),
    ("collapsed", "[REFUSED] worst fold: worst fold 0.6000 vs the baseline's 0.7900"),
    ("tested", "[REFUSED] test evaluation: lower bound -0.0900 (paired_delta_auc_ci_low)"),
    ("nobase", "[REFUSED] baseline: the search has no real_only trial that finished all 3 folds"),
    ("unmeasured", "[REFUSED] test evaluation: evaluation run"),
    ("smoke", "[REFUSED] smoke test: search"),
])
def test_gate_refuses_with_the_numbers_and_registers_nothing(store, capsys, name, reason):
    uri, client, _ = store
    assert reason in refused(uri, name)
    assert client.search_registered_models(f"name = '{name}-generator'") == []
    assert cli.main(["promote", "--experiment", name, "--tracking-uri", uri]) == cli.EXIT_USAGE
    assert reason in capsys.readouterr().err


def test_a_mean_gain_whose_lower_bound_is_below_zero_is_refused(store):
    """The lucky trial's folds beat the baseline by +0.06 on average, but one fold carries it: the
    Nadeau-Bengio bound is -0.194, and the bound decides, not the mean."""
    uri, _, _ = store
    lucky = fold_delta([0.97, 0.80, 0.81], [0.80] * 3, test_train_ratio=0.5)
    assert lucky.mean > 0 > lucky.lcb
    text = refused(uri, "lcb", rank_by="mean", model_name="lcb-mean")
    assert f"[REFUSED] paired folds: one-sided 95% lower bound {lucky.lcb:+.4f}" in text
    assert "mean +0.0600 over 3 folds; must be > 0" in text
    assert "[ok] paired folds" not in text  # never [ok] beside the failing number


def test_an_evaluation_of_another_trial_is_no_evidence_for_the_pick(store):
    uri, _, ids = store
    text = refused(uri, "elsewhere", rank_by="mean")
    assert text.startswith("trial lucky ")
    assert "[REFUSED] paired folds: one-sided 95% lower bound -0.1943" in text
    assert "evaluations of other trials (steady) are not evidence for this one" in text
    assert "+0.0300" not in text  # the other trial's bound is not shown as this one's


def test_the_trial_s_own_evaluation_is_the_stronger_evidence(store, capsys):
    uri, _, ids = store
    choice, _ = promote(uri, "tested_lucky", rank_by="mean")
    assert choice.allowed
    text = choice.explain()
    assert "[ok] test evaluation: lower bound +0.0110 (frac_1_delta_auc_lo)" in text
    assert "[info] paired folds: one-sided 95% lower bound -0.1943" in text and "not deciding" in text


def test_a_negative_evaluation_refuses_even_a_trial_that_wins_in_cross_validation(store):
    uri, _, ids = store
    text = refused(uri, "tested")
    assert "[ok] worst fold" in text and "[info] paired folds: one-sided 95% lower bound +0.0300" in text
    # the newest of the two (same kind of interval) decides; the other is listed
    newest, older = ids["tested"]["evaluation1"], ids["tested"]["evaluation0"]
    assert f"-0.0400 [-0.0900, +0.0100], t interval over the paired seeds, evaluation run {newest}" in text
    assert f"other evaluations of it: run {older} paired_delta_auc_ci_low -0.0460" in text


def test_the_strongest_interval_an_evaluation_logged_decides(store):
    uri, _, _ = store
    text = refused(uri, "bootstrapped")
    # the t interval's bound (+0.0100) would pass; the bootstrap one is preferred and does not
    assert "[REFUSED] test evaluation: lower bound -0.0040 (paired_delta_auc_bootstrap_ci_low)" in text
    assert "+0.0100 [-0.0040, +0.0240], paired bootstrap over test images" in text


def test_an_evaluation_without_an_interval_is_a_refusal_naming_what_is_missing(store):
    uri, _, ids = store
    text = refused(uri, "unmeasured")
    assert (f"evaluation run {ids['unmeasured']['evaluation0']} of this trial logged none of frac_1_delta_auc_lo, "
            "paired_delta_auc_bootstrap_ci_low, paired_delta_auc_ci_low") in text


def test_a_smoke_test_search_is_refused_unless_forced(store, capsys):
    uri, client, ids = store
    text = refused(uri, "smoke")
    assert "ran with --smoke-test (tag gantune.smoke_test=true)" in text
    assert "[ok] paired folds" in text  # it would pass otherwise: the smoke check alone refuses
    assert cli.main(["promote", "--experiment", "smoke", "--tracking-uri", uri, "--force"]) == 0
    version = client.get_model_version_by_alias("smoke-generator", "champion")
    assert version.run_id == ids["smoke"]["gan"] and version.tags["gantune.forced"] == "true"
    assert '"check": "smoke test", "passed": false' in version.tags["gantune.gate"]


def test_force_registers_and_records_it_on_the_version(store, capsys):
    uri, client, ids = store
    assert cli.main(["promote", "--experiment", "collapsed", "--tracking-uri", uri, "--force"]) == 0
    assert "FORCED past the gate" in capsys.readouterr().out
    version = client.get_model_version_by_alias("collapsed-generator", "champion")
    assert version.run_id == ids["collapsed"]["gan"]
    assert version.tags["gantune.forced"] == "true" and '"passed": false' in version.tags["gantune.gate"]


def test_rank_by_paired_lcb_prefers_the_steady_gain(store):
    uri, _, ids = store
    by_lcb, _ = promote(uri, "lcb", model_name="lcb-default")  # the space's search.rank_by
    assert by_lcb.rank_by == "paired_lcb" and by_lcb.best.info.run_id == ids["lcb"]["steady"]
    base = [0.80, 0.80, 0.80]
    lucky, steady = (
        fold_delta([0.97, 0.80, 0.81], base, test_train_ratio=0.5),
        fold_delta([0.84, 0.85, 0.84], base, test_train_ratio=0.5),
    )
    assert steady.lcb > lucky.lcb and lucky.mean > steady.mean  # why: the reference numbers
    assert by_lcb.paired.lcb == pytest.approx(steady.lcb) and steady.lcb > 0
    by_mean = refused(uri, "lcb", rank_by="mean", model_name="lcb-mean")
    assert by_mean.startswith("trial lucky ")  # mean gain 0.06 > 0.043: ranked first, then refused on its bound


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


def test_a_smoke_test_search_is_marked_on_its_parent_run(tmp_path):
    """--smoke-test reaches the parent run as the tag the gate reads; a normal search has none."""
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment_id = client.create_experiment("s", artifact_location=(tmp_path / "art").as_uri())
    space_file = Path(__file__).resolve().parents[2] / "spaces" / "breastmnist.yaml"
    for smoke, tag in ((True, "true"), (False, None)):
        resolved = resolve_space(str(space_file), smoke_test=smoke).resolved()
        assert resolved.get("smoke_test") is (True if smoke else None)
        run_id = start_parent_run(client, experiment_id, resolved)
        assert client.get_run(run_id).data.tags.get("gantune.smoke_test") == tag
