"""What a person watching `gantune search` sees.

A live compact view: one status line (trials done / running / failed, the best metric so far with
its hyperparameters, elapsed and estimated remaining time) every few seconds, and Ray's trial
table trimmed to the searched hyperparameters and the metric whenever a trial starts or ends.
`--quiet` prints one line per finished trial and nothing else, for CI logs.

Ray 2.60 defaults to its new output engine (RAY_AIR_NEW_OUTPUT=1), which ignores
`RunConfig(progress_reporter=...)` and infers its own columns; `make_progress` switches this
driver process back to the reporter API so the columns are ours."""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Any

from ray.tune import Callback, CLIReporter
from ray.tune.progress_reporter import _trial_progress_table

from gantune.trainables.config import TrialConfig

from .callbacks import TrialLines
from .leaderboard import trial_outcome, usable, value_text

NEW_OUTPUT_ENV = "RAY_AIR_NEW_OUTPUT"
REPORT_EVERY_S = 10
"""Seconds between two status lines of the live view."""


@dataclass(frozen=True)
class Snapshot:
    """The search at one moment, computed from Tune's trials (plain data, so it tests without Ray)."""

    total: int
    """Trials the search will run (num_samples)."""
    done: int
    """Trials ended without error (all folds, or stopped early by the scheduler)."""
    running: int
    failed: int
    """Trials that errored, diverged or ran out of memory."""
    best_trial: str | None
    best_value: float
    best_params: dict[str, Any]
    elapsed_s: float
    eta_s: float | None
    """Estimated seconds until every trial has ended; None before any fold has finished."""


def is_failed(status: str, result: dict) -> bool:
    return status == "ERROR" or trial_outcome(result or {}) != "OK"


def trial_fraction(status: str, result: dict, folds: int) -> float:
    """How much of a trial's work is behind it: 1 once it ended, else its share of folds done."""
    if status in ("TERMINATED", "ERROR"):
        return 1.0
    return min(1.0, (result or {}).get("folds_done", 0) / max(folds, 1))


def snapshot(
    trials, metric: str, mode: str, hyperparameters: list[str], total: int, folds: int, elapsed_s: float
) -> Snapshot:
    """`trials` are Tune Trials (or anything with trial_id, status, last_result and config)."""
    ended = [t for t in trials if t.status in ("TERMINATED", "ERROR")]
    failed = sum(is_failed(t.status, t.last_result) for t in trials)
    best, sign = None, 1.0 if mode == "max" else -1.0
    for t in trials:
        if not usable(t.last_result or {}, metric, failed=t.status == "ERROR"):
            continue
        value = t.last_result[metric]
        if best is None or sign * value > sign * best.last_result[metric]:
            best = t
    # Progress in trial-equivalents, folds included: the rate of the folds already finished
    # (at the concurrency the cluster actually gave) predicts the rest.
    work = sum(trial_fraction(t.status, t.last_result, folds) for t in trials)
    eta = (max(total, len(trials)) - work) * elapsed_s / work if work > 0 else None
    return Snapshot(
        total=max(total, len(trials)),
        done=len(ended) - sum(is_failed(t.status, t.last_result) for t in ended),
        running=sum(t.status == "RUNNING" for t in trials),
        failed=failed,
        best_trial=best.trial_id if best else None,
        best_value=best.last_result[metric] if best else float("nan"),
        best_params={k: best.config.get(k) for k in hyperparameters} if best else {},
        elapsed_s=elapsed_s,
        eta_s=eta,
    )


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
    [3/6 done | 2 running | 0 failed] best val_auc 0.731 (trial 1a2b, gan.lr=0.00023 ...) | 1m02s elapsed, ~2m10s left
    """
    counts = f"[{s.done}/{s.total} done | {s.running} running | {s.failed} failed]"
    if s.best_trial is None:
        best = f"no {metric} yet"
    else:
        params = " ".join(f"{k}={value_text(v)}" for k, v in s.best_params.items())
        best = f"best {metric} {s.best_value:.4g} (trial {s.best_trial}{', ' + params if params else ''})"
    left = "0s" if s.done + s.failed >= s.total else f"~{duration(s.eta_s)}"
    return f"{counts} {best} | {duration(s.elapsed_s)} elapsed, {left} left"


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
        self.last_states: tuple = ()

    def report(self, trials, done: bool, *sys_info: str) -> None:
        metric, mode = self.objective
        s = snapshot(trials, metric, mode, self.hyperparameters, self._total_samples or 0, self.folds,
                     time.monotonic() - self.started)
        lines = [status_line(s, metric)]
        states = tuple((t.trial_id, t.status) for t in trials)
        if done or states != self.last_states:
            self.last_states = states
            lines += _trial_progress_table(
                trials, metric_columns=self._metric_columns, parameter_columns=self._parameter_columns,
                metric=metric, mode=mode, sort_by_metric=done, max_rows=None if done else self._max_progress_rows,
            )
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
