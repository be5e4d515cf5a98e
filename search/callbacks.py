"""Every Tune callback of a search, run on the driver: closing trial runs that a scheduler
stopped or an error killed (`CloseTrialRuns`), sweeping runs left RUNNING or orphaned when the
experiment ends (`SweepTrialRuns`), noticing Ctrl-C (`InterruptWatch`), and `--quiet`'s one line
per trial (`TrialLines`). The callbacks are pickled with the Tuner, so a restored search runs
them too."""

from __future__ import annotations

import signal
import threading

from mlflow.tracking import MlflowClient
from ray.tune import Callback

from gantune.trainables.tracking import find_trial_run

from .leaderboard import trial_status, value_text
from .runs import trial_runs


class CloseTrialRuns(Callback):
    """Ends every trial's MLflow run from the driver: a trial stopped early by ASHA is killed at a
    report and cannot end its own run; an errored trial may have died before it could."""

    def __init__(self, tracking_uri: str, experiment_id: str, parent_run_id: str) -> None:
        self.client = MlflowClient(tracking_uri)
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id

    def _close(self, trial, status: str, reason: str | None = None) -> None:
        run = find_trial_run(self.client, self.experiment_id, self.parent_run_id, trial.trial_id)
        if run is None or run.info.status != "RUNNING":
            return
        if reason:
            self.client.set_tag(run.info.run_id, "gantune.failure_reason", reason[:5000])
        if status == "KILLED":
            self.client.set_tag(run.info.run_id, "gantune.stopped_early", "true")
        self.client.set_terminated(run.info.run_id, status=status)

    def on_trial_complete(self, iteration, trials, trial, **info):
        done = trial.last_result.get("folds_done")
        # Finished trials end their own run; one still RUNNING here was stopped by the scheduler.
        self._close(trial, "KILLED" if done else "FAILED")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._close(trial, "FAILED", reason=str(getattr(trial, "error_msg", None) or "trial raised an error"))


ORPHAN_REASON = (
    "orphaned: the driver was killed after this trial started but before Tune checkpointed the "
    "experiment; the resumed search never knew the trial and re-sampled it"
)


def sweep_trial_runs(
    client: MlflowClient, experiment_id: str, parent_run_id: str, trial_status: dict[str, str]
) -> dict[str, int]:
    """Close every trial run still RUNNING; delete runs of trials Tune does not know.

    trial_status maps Tune trial id -> Tune status ('TERMINATED', 'ERROR', ...). Returns counts
    of what was done, for the log."""
    counts = {"closed": 0, "orphans_deleted": 0}
    for run in trial_runs(client, experiment_id, parent_run_id):
        run_id = run.info.run_id
        status = trial_status.get(run.data.tags.get("gantune.trial_id", ""))
        if status is None:
            client.set_tag(run_id, "gantune.failure_reason", ORPHAN_REASON)
            if run.info.status == "RUNNING":
                client.set_terminated(run_id, status="KILLED")
            client.delete_run(run_id)  # soft delete: `mlflow gc` or the UI can still restore it
            counts["orphans_deleted"] += 1
        elif run.info.status == "RUNNING":
            # A finished trial ends its own run before its last report; still RUNNING here means
            # the scheduler stopped it or it errored before it could close the run.
            client.set_terminated(run_id, status="FAILED" if status == "ERROR" else "KILLED")
            counts["closed"] += 1
    return counts


class SweepTrialRuns(Callback):
    """Runs `sweep_trial_runs` when Tune ends the experiment, with Tune's own list of trials
    (restored ones included). Lives in the Tuner's pickled run config, so a restored search
    sweeps too."""

    def __init__(self, tracking_uri: str, experiment_id: str, parent_run_id: str) -> None:
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id

    def on_experiment_end(self, trials, **info):
        client = MlflowClient(self.tracking_uri)
        sweep_trial_runs(client, self.experiment_id, self.parent_run_id, {t.trial_id: t.status for t in trials})


INTERRUPTED = threading.Event()
"""Set when Ctrl-C, SIGTERM or SIGUSR1 reached the search's driver (see InterruptWatch)."""

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)
"""Ctrl-C; what `ray job stop`, pod deletion, `docker stop` and a RayJob's deletion send; and
Tune's own graceful-stop signal. All end the search the same resumable way."""


class InterruptWatch(Callback):
    """Tells the driver that a stop signal cut the search short.

    On SIGINT (and SIGUSR1), Tune's own handler saves the experiment and `Tuner.fit` returns as if
    the search had ended, with in-flight trials looking like trials the scheduler stopped. Tune
    installs that handler before it sets up callbacks, so `setup` can wrap it: the flag is set,
    then Tune's handler runs. SIGTERM, which Tune leaves to kill the driver mid-checkpoint, gets
    the same handler, so a stopped job or a deleted pod leaves a resumable search; a second
    SIGTERM kills as usual. A module-level Event, not an attribute: a restored search runs a
    callback unpickled from the first run's config."""

    def setup(self, **info):
        INTERRUPTED.clear()
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers live on the main thread only (Tune installs none either)
        tune_handler = signal.getsignal(signal.SIGINT)

        def on_stop(signum, frame):
            INTERRUPTED.set()
            if signum == signal.SIGTERM:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the next one is not graceful
            if callable(tune_handler):
                tune_handler(signum, frame)

        for signum in STOP_SIGNALS:
            signal.signal(signum, on_stop)


class TrialLines(Callback):
    """--quiet: one line per ended trial, nothing in between."""

    def __init__(self, metric: str, hyperparameters: list[str], total: int, folds: int) -> None:
        self.metric = metric
        self.hyperparameters = list(hyperparameters)
        self.total = total
        self.folds = folds
        self.ended = 0

    def _line(self, trial, status: str) -> None:
        self.ended += 1
        result = trial.last_result or {}
        value = result.get(self.metric)
        if status == "done":
            outcome = trial_status(False, result, self.folds)
            status = {"OK": "done", "STOPPED": "stopped early"}.get(outcome, outcome)
        params = " ".join(f"{k}={value_text(trial.config.get(k))}" for k in self.hyperparameters)
        shown = "nan" if value is None else f"{value:.4g}"
        print(f"trial {trial.trial_id} {status} ({self.ended}/{self.total}): {self.metric}={shown} "
              f"folds={result.get('folds_done', 0)} {params}", flush=True)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._line(trial, "done")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._line(trial, "ERROR")
