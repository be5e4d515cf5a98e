"""Repeated k-fold: data.repeats x data.folds folds, repeat r split with seed data.seed + r, one
Tune report per fold over all repeats, fold metrics keyed without collisions."""

import numpy as np
import pytest

from tune_context import tune_context

from gantune.trainables import pipeline, tracking, trial
from gantune.trainables.config import ConfigError, TrialConfig
from gantune.trainables.data.datasets import DataSplits
from gantune.trainables.data.folds import make_folds

FAST = {
    "data.folds": 2, "data.repeats": 2, "data.positive_class": 0, "synth.ratio": 0.0,
    "classifier.steps": 2, "classifier.eval_every": 2, "classifier.width": 0.05, "classifier.batch_size": 16,
}


def test_trial_folds_repeat_with_shifted_seeds(small_pool):
    cfg = TrialConfig.from_flat({**FAST, "data.folds": 3, "data.repeats": 3, "data.seed": 5})
    folds = trial.trial_folds(cfg, DataSplits(pool=small_pool, test=small_pool))
    labels = small_pool.labels.numpy()
    assert [f.index for f in folds] == list(range(9))
    for r in range(3):
        expected = make_folds(labels, 3, 5 + r)
        for i, fold in enumerate(folds[3 * r: 3 * r + 3]):
            assert np.array_equal(fold.val_idx, expected[i].val_idx)
        # each repeat still holds every pool image out exactly once
        assert sorted(np.concatenate([f.val_idx for f in folds[3 * r: 3 * r + 3]])) == list(range(len(labels)))
    assert not np.array_equal(folds[0].val_idx, folds[3].val_idx)  # a new split, not the same one again
    assert TrialConfig().data.repeats == 1 and len(trial.trial_folds(TrialConfig.from_flat({"data.folds": 3}),
                                                                         DataSplits(small_pool, small_pool))) == 3


def test_repeats_must_be_positive():
    with pytest.raises(ConfigError, match="data.repeats"):
        TrialConfig.from_flat({"data.repeats": 0})


class FakeRun:
    run_id = "run0"  # every report carries it: the driver closes runs by id

    def __init__(self):
        self.events = []

    def log_fold(self, result, results, means):
        self.events.append(("fold", result.fold))

    def finish(self):
        self.events.append(("finish",))

    def fail(self, exc):
        raise exc


def test_trainable_reports_once_per_fold_over_all_repeats(small_pool, monkeypatch, tmp_path):
    from ray import tune

    run, reports, checkpointed = FakeRun(), [], []

    def report(metrics, checkpoint=None):
        reports.append(metrics)
        run.events.append(("report",))
        with checkpoint.as_directory() as directory:  # the folds a restored trial would skip
            checkpointed.append([r.fold for r in trial.load_fold_results(directory)])

    monkeypatch.setattr(tracking.TrialRun, "open", classmethod(lambda cls, *a, **k: run))
    monkeypatch.setattr(tune, "get_context", lambda: tune_context(tmp_path / "trial"))  # not created yet
    monkeypatch.setattr(tune, "get_checkpoint", lambda: None)  # a fresh trial
    monkeypatch.setattr(tune, "report", report)
    settings = pipeline.StudySettings(
        fixed=FAST, data=DataSplits(small_pool, small_pool), tracking_uri="", experiment_id="", parent_run_id="",
        seed=0, cpus_per_trial=1, gpus_per_trial=0,
    )
    pipeline.trainable({}, settings)
    assert [r["folds_done"] for r in reports] == [1, 2, 3, 4]
    assert checkpointed == [[0], [0, 1], [0, 1, 2], [0, 1, 2, 3]]
    for i, r in enumerate(reports):  # each report carries every fold so far, each under its own key
        assert [j for j in range(4) if f"fold{j}_val_auc" in r] == list(range(i + 1))
        assert all(r[f"fold{j}_val_auc"] == reports[j][f"fold{j}_val_auc"] for j in range(i + 1))
    assert run.events[-2:] == [("finish",), ("report",)]  # ended before the last report (ASHA may stop there)
    assert run.events.count(("finish",)) == 1


def test_asha_max_t_counts_folds_times_repeats():
    from gantune.search.space import Space
    from gantune.search.tuner import make_scheduler

    space = Space("x.yaml", "x", {"data.folds": 3, "data.repeats": 2}, {})
    assert make_scheduler(space)._max_t == 6


def test_a_restored_trial_with_every_fold_checkpointed_only_closes_its_run(small_pool, monkeypatch, tmp_path):
    """Driver killed after the trial's last report but before it returned: on restore nothing is
    recomputed, and the reopened MLflow run ends FINISHED (not left for the sweep to mark KILLED)."""
    from ray import tune

    folds = [trial.FoldResult(i, {"auc": 0.7}, np.zeros(2), np.zeros((2, 2)), trial.Synthetic(), {0: 0})
             for i in range(4)]  # FAST: 2 folds x 2 repeats
    trial.save_fold_results(folds, str(tmp_path))
    run = FakeRun()
    monkeypatch.setattr(tracking.TrialRun, "open", classmethod(lambda cls, *a, **k: run))
    monkeypatch.setattr(tune, "get_context", lambda: tune_context(tmp_path))
    monkeypatch.setattr(tune, "get_checkpoint", lambda: tune.Checkpoint.from_directory(str(tmp_path)))
    monkeypatch.setattr(trial, "run_fold", lambda *a, **k: pytest.fail("a checkpointed fold was recomputed"))
    monkeypatch.setattr(tune, "report", lambda *a, **k: pytest.fail("nothing new to report"))
    settings = pipeline.StudySettings(
        fixed=FAST, data=DataSplits(small_pool, small_pool), tracking_uri="", experiment_id="", parent_run_id="",
        seed=0, cpus_per_trial=1, gpus_per_trial=0,
    )
    pipeline.trainable({}, settings)
    assert run.events == [("finish",)]



def test_a_restored_trial_replays_the_folds_tune_s_snapshot_missed_without_recomputing_them(
    small_pool, monkeypatch, tmp_path
):
    """Defect 14b: Tune's experiment snapshot lags, so a restored trial gets the checkpoint of
    fold 2 although folds 3 and 4 were computed, logged to MLflow and checkpointed before the
    driver was killed. They are reported to Tune again from the newest checkpoint in the trial's
    folder (a half-written one is skipped), never recomputed and never logged a second time."""
    from ray import tune

    metrics = {m: 0.5 for m in trial.METRIC_NAMES}
    folds = [trial.FoldResult(i, metrics, np.zeros(2), np.zeros((2, 2)), trial.Synthetic(), {0: 0})
             for i in range(4)]  # FAST: 2 folds x 2 repeats
    for index, count in ((1, 2), (3, 4)):
        directory = tmp_path / f"checkpoint_00000{index}"
        directory.mkdir()
        trial.save_fold_results(folds[:count], str(directory))
    (tmp_path / "checkpoint_000004").mkdir()  # the kill cut its copy short: folds.json only
    (tmp_path / "checkpoint_000004" / trial.FOLDS_JSON).write_text('{"folds": []')
    run, reports = FakeRun(), []

    def report(metrics, checkpoint=None):
        reports.append(metrics["folds_done"])
        run.events.append(("report",))

    monkeypatch.setattr(tracking.TrialRun, "open", classmethod(lambda cls, *a, **k: run))
    monkeypatch.setattr(tune, "get_context", lambda: tune_context(tmp_path))
    monkeypatch.setattr(tune, "get_checkpoint", lambda: tune.Checkpoint.from_directory(
        str(tmp_path / "checkpoint_000001")))  # what Tune's lagging snapshot knew: 2 folds
    monkeypatch.setattr(trial, "run_fold", lambda *a, **k: pytest.fail("a checkpointed fold was recomputed"))
    monkeypatch.setattr(tune, "report", report)
    settings = pipeline.StudySettings(
        fixed=FAST, data=DataSplits(small_pool, small_pool), tracking_uri="", experiment_id="", parent_run_id="",
        seed=0, cpus_per_trial=1, gpus_per_trial=0,
    )
    pipeline.trainable({}, settings)
    assert reports == [3, 4]  # Tune hears of folds 3 and 4, in order, so ASHA compares at equal folds
    assert ("fold", 2) not in run.events and ("fold", 3) not in run.events  # not logged to MLflow again
    assert run.events[-2:] == [("finish",), ("report",)]
