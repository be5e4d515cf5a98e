"""What a person watching `gantune search` sees.

A live compact view: one status line (how many trials ended and how, how many run, the best
metric so far with its hyperparameters, elapsed and estimated remaining time) every few seconds,
and a trial table (state, folds, metric, searched hyperparameters) whenever a trial starts or
ends. `--quiet` prints one line per finished trial and nothing else, for CI logs. The outcome
words are trainables/outcome.py's, as in the leaderboard and on the MLflow runs.

Ray 2.60 defaults to its new output engine (RAY_AIR_NEW_OUTPUT=1), which ignores
`RunConfig(progress_reporter=...)` and infers its own columns; `make_progress` switches this
driver process back to the reporter API so the view is ours."""

from __future__ import annotations

import math
import os
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

from ray.tune import Callback, CLIReporter

from gantune.trainables.config import TrialConfig

from .callbacks import TrialLines
from .leaderboard import format_table, outcome_counts, trial_outcome, usable, value_text

NEW_OUTPUT_ENV = "RAY_AIR_NEW_OUTPUT"
REPORT_EVERY_S = 10
"""Seconds between two status lines of the live view."""
ENDED = ("TERMINATED", "ERROR")
"""Tune statuses of a trial that will not run again."""


@dataclass(frozen=True)
class Snapshot:
    """The search at one moment, computed from Tune's trials (plain data, so it tests without Ray)."""

    total: int
    """Trials the search will run (num_samples)."""
    outcomes: list[str]
    """How each ended trial ended (trainables/outcome.py)."""
    running: int
    best_trial: str | None
    best_value: float
    best_params: dict[str, Any]
    elapsed_s: float
    eta_s: float | None
    """Estimated seconds until every trial has ended (FoldEta); None before any fold has finished."""
    best_folds: int = 0
    """Folds behind best_value: the best is chosen only among the trials with the most folds done
    (a running trial's one lucky fold is not compared with complete trials' means)."""
    folds: int = 0
    """Folds of a complete trial."""


def ended_outcome(trial, folds: int) -> str:
    return trial_outcome(trial.status == "ERROR", trial.last_result or {}, folds)


def snapshot(trials, metric: str, mode: str, hyperparameters: list[str], total: int, folds: int,
             elapsed_s: float, eta_s: float | None = None) -> Snapshot:
    """`trials` are Tune Trials (or anything with trial_id, status, last_result and config)."""
    best, sign = None, 1.0 if mode == "max" else -1.0
    candidates = [t for t in trials if usable(t.last_result or {}, metric, failed=t.status == "ERROR")]
    most = max((done(t) for t in candidates), default=0)
    for t in candidates:
        if done(t) != most:  # only means over the same number of folds are compared
            continue
        value = t.last_result[metric]
        if best is None or sign * value > sign * best.last_result[metric]:
            best = t
    return Snapshot(
        total=max(total, len(trials)),
        outcomes=[ended_outcome(t, folds) for t in trials if t.status in ENDED],
        running=sum(t.status == "RUNNING" for t in trials),
        best_trial=best.trial_id if best else None,
        best_value=best.last_result[metric] if best else float("nan"),
        best_params={k: best.config.get(k) for k in hyperparameters} if best else {},
        elapsed_s=elapsed_s,
        eta_s=eta_s,
        best_folds=most,
        folds=folds,
    )


# --- the remaining time ---------------------------------------------------------------------

@dataclass
class FoldEta:
    """Remaining time from the durations of completed folds, steady between them.

    At each completed fold the estimate becomes (folds that can still run) x (the median fold
    duration so far) / (trials running in parallel), but it moves at most by the spread of the
    fold durations (max - min) away from the previous estimate counted down by the clock. A change
    of plan (a trial stopped early or failed, fewer trials left than slots) moves it by the work
    gained or lost, at the median fold time (`replan`). Between completions the estimate counts
    down with the clock; before the first fold there is none (a partial fold says nothing about a
    whole one)."""

    fold_seconds: list[float] = field(default_factory=list)
    estimate: float | None = None
    at: float = 0.0
    """Clock time of `estimate`."""

    def left(self, now: float) -> float | None:
        return None if self.estimate is None else max(0.0, self.estimate - (now - self.at))

    def typical(self) -> float:
        return statistics.median(self.fold_seconds)

    def spread(self) -> float:
        return max(self.fold_seconds) - min(self.fold_seconds)

    def fold_done(self, now: float, seconds: float, folds_left: int, parallel: int) -> None:
        self.fold_seconds.append(seconds)
        target = folds_left * self.typical() / max(parallel, 1)
        if self.estimate is not None:
            countdown, spread = self.left(now), self.spread()
            target = min(max(target, countdown - spread), countdown + spread)
        self.estimate, self.at = max(0.0, target), now

    def replan(self, now: float, work_before: float, work_after: float) -> None:
        """The plan changed without a fold finishing (the scheduler stopped a trial, a trial failed,
        fewer trials are left than run at once): move the estimate by the change in work, in folds
        per parallel slot, at the median fold time."""
        if self.estimate is not None and work_after != work_before:
            self.estimate, self.at = max(0.0, self.left(now) + (work_after - work_before) * self.typical()), now


@dataclass
class FoldWatch:
    """Turns the trials Tune shows at each report into fold completions for a FoldEta: a fold's
    duration is the trial's time_total_s growth per fold finished (folds_done)."""

    folds: int
    """Reports per trial (folds x repeats)."""
    total: int
    eta: FoldEta = field(default_factory=FoldEta)
    seen: dict[str, tuple[int, float]] = field(default_factory=dict)
    """trial id -> (folds done, time_total_s) at the last look."""
    parallel: int = 1
    """The most trials seen running at once: the concurrency the cluster actually gave."""
    plan: tuple[int, int] | None = None
    """(folds left, trials in parallel) at the last look."""

    def update(self, trials, now: float) -> float | None:
        self.parallel = max(self.parallel, sum(t.status == "RUNNING" for t in trials))
        waiting = max(self.total - len(trials), 0)
        parallel = max(1, min(self.parallel, waiting + sum(t.status not in ENDED for t in trials)))
        folds_left = waiting * self.folds + sum(self.folds - done(t) for t in trials if t.status not in ENDED)
        new_folds = []  # (trial, folds finished since the last look, their mean duration)
        for t in trials:
            folds, total_s = done(t), (t.last_result or {}).get("time_total_s", 0.0)
            before, before_s = self.seen.get(t.trial_id, (0, 0.0))
            if folds > before:
                new_folds += [(total_s - before_s) / (folds - before)] * (folds - before)
            self.seen[t.trial_id] = (folds, total_s)
        if self.plan is not None:  # first the work the plan lost or gained, then the folds that ran
            expected = self.plan[0] - len(new_folds)
            self.eta.replan(now, expected / self.plan[1], folds_left / parallel)
        for seconds in new_folds:
            self.eta.fold_done(now, seconds, folds_left, parallel)
        self.plan = (folds_left, parallel)
        return self.eta.left(now)


def done(trial) -> int:
    """Folds a trial has finished (a diverged trial's failure report adds none)."""
    return int((trial.last_result or {}).get("folds_done", 0))


# --- the lines --------------------------------------------------------------------------------

def duration(seconds: float | None) -> str:
    """4 s, 3m05s, 2h07m."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def status_line(s: Snapshot, metric: str) -> str:
    """One line, e.g.
    [3/6 ended: 1 finished, 2 stopped early | 2 running] best val_auc 0.731 (trial 1a2b, gan.lr=0.00023 ...) |
    1m02s elapsed, ~2m10s left
    """
    ended = len(s.outcomes)
    counts = f"[{ended}/{s.total} ended{': ' + outcome_counts(s.outcomes) if ended else ''} | {s.running} running]"
    if s.best_trial is None:
        best = f"no {metric} yet"
    else:
        params = " ".join(f"{k}={value_text(v)}" for k, v in s.best_params.items())
        partial = f" after {s.best_folds}/{s.folds} folds, partial" if 0 < s.best_folds < s.folds else ""
        best = f"best {metric} {s.best_value:.4g} (trial {s.best_trial}{partial}{', ' + params if params else ''})"
    left = "0s" if ended >= s.total else f"~{duration(s.eta_s)}"
    return f"{counts} {best} | {duration(s.elapsed_s)} elapsed, {left} left"


def trial_state(trial, folds: int) -> str:
    """'pending', 'running', or how the trial ended."""
    if trial.status in ENDED:
        return ended_outcome(trial, folds)
    return "running" if trial.status == "RUNNING" else "pending"


def trial_table(trials, metric: str, hyperparameters: list[str], folds: int, mode: str, best_first: bool) -> str:
    """The trials as rows of the leaderboard's own table: trial, state, folds, metric, hyperparameters."""
    rows = [{"trial_id": t.trial_id, "state": trial_state(t, folds),
             "folds": f"{(t.last_result or {}).get('folds_done', 0)}/{folds}",
             metric: (t.last_result or {}).get(metric, float("nan")),
             **{k: value_text(t.config.get(k)) for k in hyperparameters}} for t in trials]
    if best_first:
        sign = -1.0 if mode == "max" else 1.0
        rows.sort(key=lambda r: (math.isnan(r[metric]), 0.0 if math.isnan(r[metric]) else sign * r[metric]))
    return format_table(rows, ["trial_id", "state", "folds", metric, *hyperparameters])


class SearchReporter(CLIReporter):
    """Tune's progress reporter for `gantune search`: the status line every REPORT_EVERY_S
    seconds; the trial table (hyperparameters + metric only) when a trial starts or ends."""

    def __init__(self, metric: str, mode: str, hyperparameters: list[str], folds: int, total: int) -> None:
        # metric/mode stay out of CLIReporter's own arguments: Tune passes them again from
        # TuneConfig and refuses a reporter that already has them.
        super().__init__(
            parameter_columns=list(hyperparameters),
            metric_columns={metric: metric, "folds_done": "folds"},
            total_samples=total,
            max_report_frequency=REPORT_EVERY_S,
        )
        self.objective = (metric, mode)
        self.hyperparameters = list(hyperparameters)
        self.folds = folds
        self.started = time.monotonic()
        self.watch = FoldWatch(folds, total)
        self.last_states: tuple = ()

    def report(self, trials, done: bool, *sys_info: str) -> None:
        metric, mode = self.objective
        now = time.monotonic()
        s = snapshot(trials, metric, mode, self.hyperparameters, self._total_samples or 0, self.folds,
                     now - self.started, self.watch.update(trials, now))
        lines = [status_line(s, metric)]
        states = tuple((t.trial_id, t.status) for t in trials)
        if done or states != self.last_states:
            self.last_states = states
            lines.append(trial_table(trials, metric, self.hyperparameters, self.folds, mode, best_first=done))
        print("\n".join(lines), flush=True)


def make_progress(space, quiet: bool) -> tuple[SearchReporter | None, list[Callback]]:
    """(progress_reporter, extra callbacks) for tune.RunConfig; call it on the driver before
    `Tuner.fit`, with verbose=0 when quiet and 1 otherwise."""
    os.environ[NEW_OUTPUT_ENV] = "0"  # see the module docstring: the new engine drops our reporter
    metric, hyperparameters = space.search.metric, sorted(space.domains)
    total = space.search.num_samples
    folds = TrialConfig.from_flat(space.fixed).data.total_folds  # reports per trial, repeats included
    if quiet:
        return None, [TrialLines(metric, hyperparameters, total, folds)]
    return SearchReporter(metric, space.search.mode, hyperparameters, folds, total), []
