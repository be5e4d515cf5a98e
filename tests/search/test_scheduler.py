"""ASHA never stops a baseline early: the gate and the leaderboard compare GAN trials with the
baselines, which must be measured on every fold."""

from types import SimpleNamespace

import pytest

from ray.tune.schedulers import TrialScheduler

from gantune.search.space import SearchSettings, Space
from gantune.search.tuner import make_scheduler


BASELINES = {
    "real_only": {"synth.ratio": 0.0, "augment.enabled": False},
    "classic_aug": {"synth.ratio": 0.0, "augment.enabled": True, "augment.policy": "classic"},
    "trivial_aug": {"synth.ratio": 0.0, "augment.enabled": True, "augment.policy": "trivial"},
}
"""Each baseline's searched values, as spaces/breastmnist.yaml's baseline points have them."""


def asha(folds: int = 3):
    settings = SearchSettings(grace_period=1, reduction_factor=2, metric="val_auc", mode="max")
    space = Space("x.yaml", "x", {"data.folds": folds, "augment.strength": 0.5},
                  {"synth.ratio": {"uniform": [0.0, 2.0]}, "augment.enabled": {"choice": [False, True]},
                   "augment.policy": {"choice": ["classic", "trivial"]}}, settings)
    scheduler = make_scheduler(space)
    scheduler.set_search_properties("val_auc", "max")
    return scheduler


def add(scheduler, trial_id: str, ratio: float, **config):
    trial = SimpleNamespace(trial_id=trial_id, config={"synth.ratio": ratio, **config})
    scheduler.on_trial_add(None, trial)
    return trial


def report(scheduler, trial, fold: int, auc: float) -> str:
    return scheduler.on_trial_result(None, trial, {"training_iteration": fold, "val_auc": auc})


def test_a_weak_baseline_runs_on_where_a_weak_gan_trial_is_stopped():
    scheduler = asha()
    strong = [add(scheduler, f"gan{i}", 1.0) for i in range(3)]
    for trial in strong:
        assert report(scheduler, trial, 1, 0.9) == TrialScheduler.CONTINUE
    weak_gan, weak_baseline = add(scheduler, "gan_weak", 1.0), add(scheduler, "real_only", 0.0)
    # below the rung's cutoff: ASHA stops the GAN trial, and would stop the baseline too
    assert report(scheduler, weak_gan, 1, 0.5) == TrialScheduler.STOP
    assert report(scheduler, weak_baseline, 1, 0.5) == TrialScheduler.CONTINUE
    assert report(scheduler, weak_baseline, 2, 0.5) == TrialScheduler.CONTINUE
    assert scheduler._num_stopped == 1  # only the GAN trial counts as stopped


def test_the_baseline_still_ends_at_its_last_fold():
    scheduler = asha(folds=2)
    baseline = add(scheduler, "real_only", 0.0)
    assert report(scheduler, baseline, 2, 0.5) == TrialScheduler.STOP  # max_t: done, as every trial


def test_the_exemption_reads_the_fixed_ratio_too():
    settings = SearchSettings(grace_period=1, reduction_factor=2)
    space = Space("x.yaml", "x", {"data.folds": 3, "synth.ratio": 0.0}, {"gan.lr": {"uniform": [1e-4, 1e-3]}},
                  settings)
    scheduler = make_scheduler(space)
    assert scheduler.is_baseline({"gan.lr": 2e-4})
    assert not asha().is_baseline({"synth.ratio": 0.5})


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_no_baseline_is_stopped_early(name):
    """Every baseline the gate, the leaderboard and `evaluate` compare with runs every fold: a
    trivial_aug baseline stopped after one fold once gave `evaluate` its settings."""
    scheduler = asha()
    for trial in [add(scheduler, f"gan{i}", 1.0) for i in range(3)]:
        assert report(scheduler, trial, 1, 0.9) == TrialScheduler.CONTINUE
    values = BASELINES[name]
    baseline = add(scheduler, name, values["synth.ratio"], **{k: v for k, v in values.items() if k != "synth.ratio"})
    assert scheduler.is_baseline(baseline.config)
    assert report(scheduler, baseline, 1, 0.5) == TrialScheduler.CONTINUE  # below the cutoff, runs on
    assert report(scheduler, baseline, 2, 0.5) == TrialScheduler.CONTINUE
    assert scheduler._num_stopped == 0  # not counted as stopped early
    assert report(scheduler, baseline, 3, 0.5) == TrialScheduler.STOP  # its last fold: done, as every trial
