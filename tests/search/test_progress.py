"""The live view of `gantune search` on Tune's own Trial objects (stubs: no Ray cluster)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from ray.tune.experiment import Trial

from gantune.search.callbacks import TrialLines
from gantune.search.progress import (
    NEW_OUTPUT_ENV,
    SearchReporter,
    duration,
    make_progress,
    snapshot,
    status_line,
)
from gantune.search.space import load_space

ROOT = Path(__file__).resolve().parents[2]
HP = ["gan.lr", "synth.ratio"]


def trial(trial_id: str, status: str, result: dict | None = None, **config) -> Trial:
    t = Trial("__fake", config=config, stub=True, trial_id=trial_id)
    t.set_status(status)
    if result is not None:
        t.run_metadata.last_result = result
    return t


@pytest.fixture
def trials():
    return [
        trial("done1", Trial.TERMINATED, {"val_auc": 0.71, "folds_done": 3}, **{"gan.lr": 2e-4, "synth.ratio": 1.25}),
        trial("run1", Trial.RUNNING, {"val_auc": 0.80, "folds_done": 1}, **{"gan.lr": 5e-4, "synth.ratio": 0.5}),
        trial(
            "div1",
            Trial.TERMINATED,
            {"val_auc": 0.99, "folds_done": 1, "diverged": 1},
            **{"gan.lr": 9e-4, "synth.ratio": 2.0},
        ),
        trial("err1", Trial.ERROR, {}, **{"gan.lr": 1e-4, "synth.ratio": 1.0}),
        trial("pend", Trial.PENDING, None, **{"gan.lr": 3e-4, "synth.ratio": 0.0}),
    ]


def test_snapshot_counts_best_and_eta(trials):
    s = snapshot(trials, "val_auc", "max", HP, total=6, folds=3, elapsed_s=120.0)
    assert (s.total, s.done, s.running, s.failed) == (6, 1, 1, 2)
    # A diverged trial's metric is its failure, never the best.
    assert s.best_trial == "run1" and s.best_value == 0.80
    assert s.best_params == {"gan.lr": 5e-4, "synth.ratio": 0.5}
    work = 1 + 1 / 3 + 1 + 1  # done1, run1 (1 of 3 folds), div1 and err1 ended
    assert s.eta_s == pytest.approx((6 - work) * 120.0 / work)


def test_snapshot_min_mode_and_nothing_yet(trials):
    s = snapshot(trials, "val_auc", "min", HP, total=5, folds=3, elapsed_s=10.0)
    assert s.best_trial == "done1"
    empty = snapshot([trial("p", Trial.PENDING)], "val_auc", "max", HP, total=4, folds=3, elapsed_s=3.0)
    assert empty.best_trial is None and empty.eta_s is None
    assert status_line(empty, "val_auc") == "[0/4 done | 0 running | 0 failed] no val_auc yet | 3s elapsed, ~? left"


def test_status_line(trials):
    s = snapshot(trials, "val_auc", "max", HP, total=6, folds=3, elapsed_s=62.0)
    assert status_line(s, "val_auc") == (
        f"[1/6 done | 1 running | 2 failed] best val_auc 0.8 (trial run1, gan.lr=0.0005 synth.ratio=0.5) "
        f"| 1m02s elapsed, ~{duration(s.eta_s)} left"
    )
    assert [duration(x) for x in (4, 185, 7620, None)] == ["4s", "3m05s", "2h07m", "?"]


def test_reporter_prints_status_then_trimmed_table_only_on_change(trials, capsys):
    reporter = SearchReporter("val_auc", "max", HP, folds=3, total=6)
    reporter.setup(start_time=0.0, total_samples=6, metric="val_auc", mode="max")  # as Tune does
    reporter.report(trials, False)
    first = capsys.readouterr().out.splitlines()
    assert first[0].startswith("[1/6 done | 1 running | 2 failed] best val_auc 0.8 (trial run1")
    header = next(line for line in first if "Trial name" in line)
    columns = [c.strip() for c in header.strip("|").split("|")]
    assert columns == ["Trial name", "status", "loc", "gan.lr", "synth.ratio", "val_auc", "folds"]
    reporter.report(trials, False)  # nothing started or ended: the status line alone
    assert len(capsys.readouterr().out.splitlines()) == 1
    trials[-1].set_status(Trial.RUNNING)
    reporter.report(trials, False)
    assert "Trial name" in capsys.readouterr().out


def test_quiet_lines(trials, capsys):
    lines = TrialLines("val_auc", HP, total=6, folds=3)
    lines.on_trial_complete(0, trials, trials[0])
    lines.on_trial_complete(0, trials, trials[2])
    lines.on_trial_error(0, trials, trials[3])
    lines.on_trial_complete(0, trials, trials[1])  # ended by the scheduler after 1 of 3 folds
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "trial done1 done (1/6): val_auc=0.71 folds=3 gan.lr=0.0002 synth.ratio=1.25",
        "trial div1 DIVERGED (2/6): val_auc=0.99 folds=1 gan.lr=0.0009 synth.ratio=2",
        "trial err1 ERROR (3/6): val_auc=nan folds=0 gan.lr=0.0001 synth.ratio=1",
        "trial run1 stopped early (4/6): val_auc=0.8 folds=1 gan.lr=0.0005 synth.ratio=0.5",
    ]


def test_make_progress_switches_to_the_reporter_api(monkeypatch):
    monkeypatch.delenv(NEW_OUTPUT_ENV, raising=False)
    space = load_space(ROOT / "spaces" / "demo.yaml")
    reporter, callbacks = make_progress(space, quiet=False)
    # Ray 2.60's new output engine drops a passed progress_reporter unless this is "0".
    assert os.environ[NEW_OUTPUT_ENV] == "0"
    assert isinstance(reporter, SearchReporter) and callbacks == []
    assert reporter.folds == 3 and reporter.hyperparameters == sorted(space.domains)
    reporter, callbacks = make_progress(space, quiet=True)
    assert reporter is None and [type(c) for c in callbacks] == [TrialLines]
