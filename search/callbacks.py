"""Every Tune callback of a search, run on the driver: closing trial runs that a scheduler
stopped or an error killed (`CloseTrialRuns`), sweeping runs left RUNNING or orphaned when the
experiment ends (`SweepTrialRuns`), noticing Ctrl-C (`InterruptWatch`), and `--quiet`'s one line
per trial (`TrialLines`). The callbacks are pickled with the Tuner, so a restored search runs
them too."""

from __future__ import annotations

import queue
import signal
import sys
import threading

from mlflow.tracking import MlflowClient
from ray.tune import Callback

from gantune.trainables import outcome
from gantune.trainables.tracking import RUN_ID_KEY, end_run, find_trial_run

from .leaderboard import trial_outcome, value_text
from .runs import trial_runs


FLUSH_TIMEOUT_S = 300.0
"""How long the end of a search waits for the driver's queued MLflow writes (a tracking server
that stopped answering must not hang the driver; the sweep then closes what is left)."""


class RunWriter:
    """The driver callbacks' MLflow writes, off Tune's control loop: one daemon thread does them
    in order from a queue, so a slow tracking server delays no scheduling decision. A write that
    fails is reported on stderr and skipped (the end-of-search sweep closes any run it left
    RUNNING). Not pickled: the callbacks that own one are pickled with the Tuner."""

    def __init__(self, tracking_uri: str) -> None:
        self.client = MlflowClient(tracking_uri)
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._drain, name="gantune-mlflow-writer", daemon=True)
        self._thread.start()

    def submit(self, write, *args) -> None:
        """Run `write(client, *args)` on the writer thread, after every write submitted before."""
        self._queue.put((write, args))

    def flush(self, timeout: float = FLUSH_TIMEOUT_S) -> bool:
        """Wait until every write submitted so far is done; False if `timeout` passed first."""
        done = threading.Event()
        self._queue.put((lambda client: done.set(), ()))
        return done.wait(timeout)

    def _drain(self) -> None:
        while True:
            write, args = self._queue.get()
            try:
                write(self.client, *args)
            except Exception as exc:  # noqa: BLE001 - one failed write must not stop the others
                print(f"gantune: warning: an MLflow write of the driver failed ({type(exc).__name__}: {exc})",
                      file=sys.stderr, flush=True)


def close_trial_run(client: MlflowClient, run_id: str | None, experiment_id: str, parent_run_id: str,
                    trial_id: str, ended: str, reason: str | None) -> None:
    """End a trial's run with outcome `ended` unless the trial ended it itself. `run_id` is what the
    trial reported; a trial that failed before its first report has none, and is looked up by its
    trial-id tag."""
    if run_id is None:
        found = find_trial_run(client, experiment_id, parent_run_id, trial_id)
        if found is None:
            return
        run_id = found.info.run_id
    if client.get_run(run_id).info.status != "RUNNING":
        return
    if reason:
        client.set_tag(run_id, "gantune.failure_reason", reason[:5000])
    end_run(client, run_id, ended)


class CloseTrialRuns(Callback):
    """Ends every trial's MLflow run from the driver: a trial stopped early by ASHA is killed at a
    report and cannot end its own run (it ends FINISHED, outcome 'stopped early'); an errored trial
    may have died before it could; a trial cut short by Ctrl-C ends KILLED ('interrupted'). The
    writes go through a RunWriter, flushed when Tune ends the experiment (finished, Ctrl-C or
    error) before SweepTrialRuns looks for runs left RUNNING."""

    def __init__(self, tracking_uri: str, experiment_id: str, parent_run_id: str) -> None:
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self._writer: RunWriter | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_writer": None}  # a thread is not pickled with the Tuner

    def __setstate__(self, state: dict) -> None:
        if "client" in state:  # pickled by a gantune from before the writer: it kept an MlflowClient
            state = {"tracking_uri": state.pop("client").tracking_uri, **state}
        self.__dict__.update({"_writer": None, **state})

    @property
    def writer(self) -> RunWriter:
        if self._writer is None:
            self._writer = RunWriter(self.tracking_uri)
        return self._writer

    def _close(self, trial, ended: str, reason: str | None = None) -> None:
        run_id = (trial.last_result or {}).get(RUN_ID_KEY)
        self.writer.submit(close_trial_run, run_id, self.experiment_id, self.parent_run_id, trial.trial_id,
                           ended, reason)

    def on_trial_complete(self, iteration, trials, trial, **info):
        done = (trial.last_result or {}).get("folds_done")
        # Finished trials end their own run; one still RUNNING here was stopped by the scheduler,
        # or by a stop signal (Tune then ends in-flight trials as if the scheduler had).
        self._close(trial, outcome.INTERRUPTED if INTERRUPTED.is_set() else outcome.STOPPED if done else outcome.FAILED)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._close(trial, outcome.FAILED, reason=str(getattr(trial, "error_msg", None) or "trial raised an error"))

    def on_experiment_end(self, trials, **info):
        if self._writer is not None and not self._writer.flush():
            print(f"gantune: warning: the driver's MLflow writes did not finish within {FLUSH_TIMEOUT_S:g} s; "
                  "runs still RUNNING are closed by the sweep", file=sys.stderr, flush=True)


ORPHAN_REASON = (
    "orphaned: the driver was killed after this trial started but before Tune checkpointed the "
    "experiment; the resumed search never knew the trial and re-sampled it"
)


def sweep_trial_runs(
    client: MlflowClient, experiment_id: str, parent_run_id: str, trial_status: dict[str, str],
    interrupted: bool = False,
) -> dict[str, int]:
    """Close every trial run still RUNNING; delete runs of trials Tune does not know.

    trial_status maps Tune trial id -> Tune status ('TERMINATED', 'ERROR', ...); `interrupted`: a
    stop signal ended the search. Returns counts of what was done, for the log."""
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
            # the scheduler (or a stop signal) stopped it or it errored before it could close the run.
            end_run(client, run_id, outcome.FAILED if status == "ERROR" else
                    outcome.INTERRUPTED if interrupted else outcome.STOPPED)
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
        sweep_trial_runs(client, self.experiment_id, self.parent_run_id, {t.trial_id: t.status for t in trials},
                         interrupted=INTERRUPTED.is_set())


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

    def _line(self, trial, errored: bool) -> None:
        self.ended += 1
        result = trial.last_result or {}
        value = result.get(self.metric)
        ended = trial_outcome(errored, result, self.folds)
        params = " ".join(f"{k}={value_text(trial.config.get(k))}" for k in self.hyperparameters)
        shown = "nan" if value is None else f"{value:.4g}"
        print(f"trial {trial.trial_id} {ended} ({self.ended}/{self.total}): {self.metric}={shown} "
              f"folds={result.get('folds_done', 0)} {params}", flush=True)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._line(trial, errored=False)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._line(trial, errored=True)
