"""How a trial ended, in one vocabulary: the live status line, the trial table, `--quiet` lines,
the leaderboard, `gantune report` and the `gantune.outcome` tag of each trial's MLflow run all use
these words. MLflow's own run status has three values; MLFLOW_STATUS says which each outcome ends
with (a trial the scheduler stopped early ran correctly, so it is FINISHED, not KILLED)."""

from __future__ import annotations

FINISHED = "finished"
"""Ran every fold."""
STOPPED = "stopped early"
"""Ended by the scheduler (ASHA) after fewer folds, its results so far kept."""
DIVERGED = "diverged"
"""A GAN's losses went non-finite; reported (not retried), with the worst metric value."""
OOM = "out of memory"
"""CUDA ran out of memory; reported (not retried), with the worst metric value."""
REJECTED = "rejected"
"""synth.select accepted too few synthetic images to fill a class's count; reported (not retried,
the same seed would draw the same images), with the worst metric value."""
FAILED = "failed"
"""Raised an error (after Tune's retries, --max-failures)."""
INTERRUPTED = "interrupted"
"""Cut short by Ctrl-C / SIGTERM; `--resume` continues it."""

MLFLOW_STATUS = {
    FINISHED: "FINISHED", STOPPED: "FINISHED",
    DIVERGED: "FAILED", OOM: "FAILED", REJECTED: "FAILED", FAILED: "FAILED",
    INTERRUPTED: "KILLED",
}
"""Outcome -> the MLflow status of the trial's run."""

OUTCOME_TAG = "gantune.outcome"
