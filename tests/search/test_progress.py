"""The live view of `gantune search` on Tune's own Trial objects (stubs: no Ray cluster)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from ray.tune.experiment import Trial

from gantune.search.callbacks import TrialLines
from gantune.search.progress import (
    NEW_OUTPUT_ENV,
    FoldEta,
    FoldWatch,
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


def test_snapshot_counts_outcomes_and_best(trials):
    s = snapshot(trials, "val_auc", "max", HP, total=6, folds=3, elapsed_s=120.0, eta_s=42.0)
    assert (s.total, s.outcomes, s.running, s.eta_s) == (6, ["finished", "diverged", "failed"], 1, 42.0)
    # A diverged trial's metric is its failure, never the best; a running trial's one fold (0.80)
    # is not compared with a complete trial's 3-fold mean (ux.md step 5).
    assert s.best_trial == "done1" and s.best_value == 0.71 and (s.best_folds, s.folds) == (3, 3)
    assert s.best_params == {"gan.lr": 2e-4, "synth.ratio": 1.25}


def test_before_any_trial_is_complete_the_best_is_said_to_be_partial(trials):
    """Only the trials with the most folds done are compared, and the line says how many."""
    early = [t for t in trials if t.trial_id != "done1"]
    early.append(trial("run2", Trial.RUNNING, {"val_auc": 0.60, "folds_done": 2}, **{"gan.lr": 1e-3, "synth.ratio": 1}))
    s = snapshot(early, "val_auc", "max", HP, total=6, folds=3, elapsed_s=62.0, eta_s=130.0)
    assert s.best_trial == "run2" and s.best_folds == 2  # 2 folds beat run1's single lucky 0.80
    assert "best val_auc 0.6 (trial run2 after 2/3 folds, partial, gan.lr=0.001" in status_line(s, "val_auc")


def test_snapshot_min_mode_and_nothing_yet(trials):
    s = snapshot(trials, "val_auc", "min", HP, total=5, folds=3, elapsed_s=10.0)
    assert s.best_trial == "done1"
    empty = snapshot([trial("p", Trial.PENDING)], "val_auc", "max", HP, total=4, folds=3, elapsed_s=3.0)
    assert empty.best_trial is None and empty.eta_s is None
    assert status_line(empty, "val_auc") == "[0/4 ended | 0 running] no val_auc yet | 3s elapsed, ~? left"


def test_status_line(trials):
    s = snapshot(trials, "val_auc", "max", HP, total=6, folds=3, elapsed_s=62.0, eta_s=130.0)
    assert status_line(s, "val_auc") == (
        "[3/6 ended: 1 finished, 1 diverged, 1 failed | 1 running] best val_auc 0.71 "
        "(trial done1, gan.lr=0.0002 synth.ratio=1.25) | 1m02s elapsed, ~2m10s left"
    )
    assert [duration(x) for x in (4, 185, 7620, None)] == ["4s", "3m05s", "2h07m", "?"]


def test_reporter_prints_status_then_trimmed_table_only_on_change(trials, capsys):
    reporter = SearchReporter("val_auc", "max", HP, folds=3, total=6)
    reporter.setup(start_time=0.0, total_samples=6, metric="val_auc", mode="max")  # as Tune does
    reporter.report(trials, False)
    first = capsys.readouterr().out.splitlines()
    assert first[0].startswith("[3/6 ended: 1 finished, 1 diverged, 1 failed | 1 running] "
                               "best val_auc 0.71 (trial done1")
    assert first[1].split() == ["trial_id", "state", "folds", "val_auc", "gan.lr", "synth.ratio"]
    states = {line.split()[0]: line.split()[1] for line in first[3:]}
    # The same words as the leaderboard and the MLflow runs' gantune.outcome tag; no Ray statuses.
    assert states == {"done1": "finished", "run1": "running", "div1": "diverged", "err1": "failed", "pend": "pending"}
    assert "TERMINATED" not in "\n".join(first) and "loc" not in first[1]
    reporter.report(trials, False)  # nothing started or ended: the status line alone
    assert len(capsys.readouterr().out.splitlines()) == 1
    trials[-1].set_status(Trial.RUNNING)
    reporter.report(trials, False)
    assert "trial_id" in capsys.readouterr().out


def test_quiet_lines(trials, capsys):
    lines = TrialLines("val_auc", HP, total=6, folds=3)
    lines.on_trial_complete(0, trials, trials[0])
    lines.on_trial_complete(0, trials, trials[2])
    lines.on_trial_error(0, trials, trials[3])
    lines.on_trial_complete(0, trials, trials[1])  # ended by the scheduler after 1 of 3 folds
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "trial done1 finished (1/6): val_auc=0.71 folds=3 gan.lr=0.0002 synth.ratio=1.25",
        "trial div1 diverged (2/6): val_auc=0.99 folds=1 gan.lr=0.0009 synth.ratio=2",
        "trial err1 failed (3/6): val_auc=nan folds=0 gan.lr=0.0001 synth.ratio=1",
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


# --- the remaining time -------------------------------------------------------------------------

def reference_eta(events):
    """The estimate after each fold completion, computed plainly: (folds left) x median / parallel,
    kept within the fold-time spread of the previous estimate counted down by the clock."""
    estimates, durations, previous = [], [], None
    for now, seconds, folds_left, parallel in events:
        durations.append(seconds)
        ordered = sorted(durations)
        middle = len(ordered) // 2
        median = ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
        target = folds_left * median / parallel
        if previous is not None:
            countdown = max(0.0, previous[0] - (now - previous[1]))
            spread = ordered[-1] - ordered[0]
            target = min(max(target, countdown - spread), countdown + spread)
        previous = (max(0.0, target), now)
        estimates.append(previous[0])
    return estimates


def noisy_fold_completions(seed=3, trials=6, folds=3, parallel=2):
    """Two workers, each running its trials' folds back to back, fold times 20-40 s: the events
    (time, duration, folds left after it, parallel) in completion order."""
    import random

    rng = random.Random(seed)
    clock, events = [0.0] * parallel, []
    for _ in range(trials * folds):
        worker = min(range(parallel), key=clock.__getitem__)
        seconds = rng.uniform(20, 40)
        clock[worker] += seconds
        events.append((clock[worker], seconds))
    events.sort()
    total = trials * folds
    return [(t, d, total - i - 1, parallel) for i, (t, d) in enumerate(events)]


def test_fold_eta_matches_the_plain_computation():
    events = noisy_fold_completions()
    eta = FoldEta()
    got = []
    for now, seconds, folds_left, parallel in events:
        eta.fold_done(now, seconds, folds_left, parallel)
        got.append(eta.left(now))
    assert got == pytest.approx(reference_eta(events))
    assert got[-1] == 0.0


def test_fold_eta_never_jumps_by_more_than_the_fold_time_spread():
    events = noisy_fold_completions(seed=11, trials=12)
    eta, durations = FoldEta(), []
    assert eta.left(0.0) is None  # no estimate from partial folds
    for now, seconds, folds_left, parallel in events:
        before = eta.left(now)
        eta.fold_done(now, seconds, folds_left, parallel)
        durations.append(seconds)
        if before is not None:
            assert abs(eta.left(now) - before) <= max(durations) - min(durations) + 1e-9
    # Between completions it only counts down with the clock.
    now = events[5][0]
    assert eta.left(now + 7) == pytest.approx(max(0.0, eta.left(now) - 7))


def timed(trial_id, status, folds, seconds):
    return trial(trial_id, status, {"folds_done": folds, "time_total_s": seconds})


def test_fold_watch_is_exact_when_folds_take_the_same_time():
    """4 trials x 3 folds of 30 s, 2 at a time: 180 s in all; the estimate at every fold is the truth."""
    watch = FoldWatch(folds=3, total=4)
    assert watch.update([timed("a", Trial.RUNNING, 0, 0), timed("b", Trial.RUNNING, 0, 0)], now=5.0) is None
    for k in (1, 2, 3):  # a and b finish fold k at 30k s
        status = Trial.TERMINATED if k == 3 else Trial.RUNNING
        first = [timed("a", status, k, 30.0 * k), timed("b", status, k, 30.0 * k)]
        later = [timed("c", Trial.RUNNING, 0, 0), timed("d", Trial.RUNNING, 0, 0)] if k == 3 else []
        assert watch.update(first + later, now=30.0 * k) == pytest.approx(180 - 30.0 * k)


def test_fold_watch_takes_off_the_folds_of_a_trial_stopped_early():
    watch = FoldWatch(folds=3, total=2)
    watch.update([timed("a", Trial.RUNNING, 0, 0), timed("b", Trial.RUNNING, 0, 0)], now=0.0)
    left = watch.update([timed("a", Trial.RUNNING, 1, 30.0), timed("b", Trial.RUNNING, 1, 30.0)], now=30.0)
    assert left == pytest.approx(4 * 30 / 2)
    # b is stopped by the scheduler after one fold: a alone has its 2 folds to go, 1 s of them done
    left = watch.update([timed("a", Trial.RUNNING, 1, 30.0), timed("b", Trial.TERMINATED, 1, 30.0)], now=31.0)
    assert left == pytest.approx(2 * 30 - 1)
    # with a third trial waiting, both slots stay busy: b's 2 unrun folds come off at 30 s / 2 slots
    watch = FoldWatch(folds=3, total=3)
    watch.update([timed("a", Trial.RUNNING, 0, 0), timed("b", Trial.RUNNING, 0, 0)], now=0.0)
    left = watch.update([timed("a", Trial.RUNNING, 1, 30.0), timed("b", Trial.RUNNING, 1, 30.0)], now=30.0)
    assert left == pytest.approx(7 * 30 / 2)
    left = watch.update([timed("a", Trial.RUNNING, 1, 30.0), timed("b", Trial.TERMINATED, 1, 30.0)], now=31.0)
    assert left == pytest.approx(7 * 30 / 2 - 1 - 2 * 30 / 2)
