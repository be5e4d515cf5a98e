"""Which trial `gantune evaluate` refits and where its baselines' settings come from, on hand-made
searches in a temporary MLflow store: by default the trial `gantune promote` would register (the
same function decides for both), `--trial best` the search's best, `--trial ID` any trial; a
baseline's augment settings only from a trial that finished every fold."""

from __future__ import annotations

import pytest
from gantune.search import evaluate as ev
from gantune.search import promote as pm
from gantune.trainables.config import TrialConfig
from mlflow.tracking import MlflowClient

FOLDS = 3
FIXED = {"data.folds": FOLDS, "data.path": "unused.npz", "augment.strength": 0.2}


def make_search(tmp_path, trials: dict, best_tag: str | None = None):
    """trials: {trial_id: (searched values, val_auc, folds done, logged a generator?)}, as a finished
    search leaves them (the baseline tag follows from the values, as in a real search)."""
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.create_experiment("s", artifact_location=(tmp_path / "art").as_uri())
    parent = client.create_run(exp, tags={"gantune.role": "search"}).info.run_id
    client.log_dict(parent, {"name": "s", "space_file": "s.yaml", "fixed": FIXED, "searched": {},
                             "search": {"metric": "val_auc", "mode": "max"}}, "config/resolved_space.json")
    for trial_id, (params, auc, done, generator) in trials.items():
        cfg = TrialConfig.from_flat({**FIXED, **params})
        tags = {"gantune.role": "trial", "mlflow.parentRunId": parent, "gantune.trial_id": trial_id}
        if cfg.baseline_name():
            tags["gantune.baseline"] = cfg.baseline_name()
        run = client.create_run(exp, tags=tags).info.run_id
        client.log_dict(run, cfg.to_flat(), "config/trial_config.json")
        client.log_metric(run, "val_auc", auc)
        client.log_metric(run, "folds_done", done)
        for i in range(done):
            client.log_metric(run, "fold_val_auc", auc + 0.001 * i, step=i)
        if generator:
            client.log_text(run, "flavors: {}\n", "generator/MLmodel")
        client.set_terminated(run)
    if best_tag:
        client.set_tag(parent, "gantune.best_trial_id", best_tag)
    client.set_terminated(parent)
    return client


REAL = {"synth.ratio": 0.0, "augment.enabled": False}
GAN = {"synth.ratio": 1.0}


def picked(client, wanted=None) -> tuple[str, str]:
    source = ev.find_source(client, "s", wanted)
    return source.trial.data.tags["gantune.trial_id"], source.why


def test_by_default_evaluate_refits_the_trial_promote_would_register(tmp_path):
    client = make_search(tmp_path, {
        "real": (REAL, 0.95, FOLDS, False),  # the search's best: a baseline (its refit would equal real_only)
        "nogen": ({"synth.ratio": 1.2}, 0.93, FOLDS, False),  # adds images, but no generator to register
        "gan": (GAN, 0.90, FOLDS, True),
        "lucky": ({"synth.ratio": 0.5}, 0.99, 1, True),  # stopped after one fold: never the pick
    }, best_tag="real")
    trial, why = picked(client)
    assert trial == "gan"
    assert why.startswith("the trial `gantune promote` would register: the best of the 3 trials that finished all 3 "
                          "folds that has a generator, ranked by val_auc (mean over folds)")
    assert "the search's best, trial real, is real_only (`--trial best` refits it)" in why
    # the same trial promote judges: one function decides for both
    choice = pm.choose(client, "s", pm.DEFAULT_METRIC, None)
    assert choice.best.data.tags["gantune.trial_id"] == "gan"
    assert picked(client, ev.BEST_GAN)[0] == "gan"  # the old name of the default still works
    assert picked(client, ev.BEST) == ("real", "--trial best: the search's best trial (tag gantune.best_trial_id)")
    assert picked(client, "lucky") == ("lucky", "chosen with --trial lucky")


def test_the_printed_header_says_which_trial_and_why_on_its_own_line(tmp_path):
    client = make_search(tmp_path, {"real": (REAL, 0.95, FOLDS, False), "gan": (GAN, 0.90, FOLDS, True)})
    source = ev.find_source(client, "s")
    first = ev.header_text("s", source).splitlines()[0]
    assert first == f"Evaluating trial gan (run {source.trial.info.run_id}): {source.why}"


def test_without_a_trial_promote_would_register_the_best_stopped_gan_trial_is_evaluated_and_said_so(tmp_path):
    client = make_search(tmp_path, {
        "real": (REAL, 0.80, FOLDS, False),
        "g1": (GAN, 0.70, 1, True),
        "g2": ({"synth.ratio": 0.4}, 0.85, 1, True),
    })
    trial, why = picked(client)
    assert trial == "g2"
    assert "so `gantune promote` would register none" in why
    assert "evaluating instead the best trial that adds synthetic images, by val_auc over the 1 of 3 folds" in why


def test_a_search_with_only_baselines_is_refused_naming_the_alternatives(tmp_path):
    client = make_search(tmp_path, {"real": (REAL, 0.80, FOLDS, False)})
    with pytest.raises(ev.EvaluateError, match="no usable trial that adds synthetic .*--trial best or --trial ID"):
        ev.find_source(client, "s")
    assert picked(client, ev.BEST)[0] == "real"


TRIVIAL = {"synth.ratio": 0.0, "augment.enabled": True, "augment.policy": "trivial"}
CLASSIC = {"synth.ratio": 0.0, "augment.enabled": True, "augment.policy": "classic"}


def test_a_baseline_s_settings_come_only_from_a_trial_that_finished_every_fold(tmp_path):
    client = make_search(tmp_path, {
        "real": (REAL, 0.80, FOLDS, False),
        "gan": (GAN, 0.85, FOLDS, True),
        # the better trivial_aug value came from one fold: its settings must not be the baseline's
        "triv_stopped": ({**TRIVIAL, "augment.strength": 0.9}, 0.99, 1, False),
        "triv_done": ({**TRIVIAL, "augment.strength": 0.4}, 0.81, FOLDS, False),
        # no classic_aug trial finished: the default policy, and the origin says why
        "cl_stopped": ({**CLASSIC, "augment.strength": 0.7}, 0.90, 1, False),
    })
    source = ev.find_source(client, "s")
    assert source.augment_sources["trivial_aug"] == "trial triv_done"
    assert source.augments["trivial_aug"].strength == 0.4 and source.augments["trivial_aug"].policy == "trivial"
    assert source.augment_sources["classic_aug"] == ("default classic policy (no classic_aug trial finished all 3 "
                                                     "folds; stopped early, not used: cl_stopped after 1)")
    classic = source.augments["classic_aug"]
    assert classic.strength == source.cfg.augment.strength == 0.2 and classic.enabled and classic.policy == "classic"
