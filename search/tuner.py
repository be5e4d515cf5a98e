"""The Ray driver: start (or join) Ray, the searcher and scheduler, the Tuner (new or restored),
and `run_search`, which opens the parent MLflow run, fits, and closes the search with its
leaderboard and figures. The Tune callbacks are in search/callbacks.py, the live view in
search/progress.py."""

from __future__ import annotations

import sys
from pathlib import Path

import optuna
import ray
from mlflow.tracking import MlflowClient
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import ConcurrencyLimiter
from ray.tune.search.optuna import OptunaSearch

from gantune.trainables.config import TrialConfig
from gantune.trainables.data.datasets import DataSplits
from gantune.trainables.pipeline import StudySettings, trainable

from . import callbacks, lease, local_cluster, plots, preflight, resume, tracking
from .logs import optuna_quiet, ray_logging_config
from .leaderboard import format_table, leaderboard_columns, leaderboard_rows
from .options import SearchOptions
from .progress import make_progress
from .gan_cache import cache_location
from .resume import SearchRecord
from .space import AUTO_CONCURRENCY, Space


class StaleFailingOptunaSearch(OptunaSearch):
    """OptunaSearch that, when Tune restores it (`--resume`), fails the study's RUNNING trials
    that no restored Tune trial will report: those a killed driver asked for after Tune's last
    experiment checkpoint. Left RUNNING in a persistent study (--optuna-storage), they would stay
    so for the whole resumed search, and TPE's constant liar would keep steering away from them."""

    told_before_restore: frozenset[str] = frozenset()
    """Tune trial ids whose study trial had finished when the driver was killed, after Tune's last
    snapshot: the restored trial reports again (its folds replayed from its checkpoints), which a
    persistent study refuses (UpdateFinishedTrialError), so those reports are not passed on."""

    def restore(self, checkpoint_path: str):
        super().restore(checkpoint_path)
        finished = {t.number for t in self._ot_study.get_trials(deepcopy=False) if t.state.is_finished()}
        self.told_before_restore = frozenset(
            tid for tid, t in self._ot_trials.items() if tid not in self._completed_trials and t.number in finished
        )
        live = {t.number for tid, t in self._ot_trials.items() if tid not in self._completed_trials}
        fail_running_trials(self._ot_study, keep=live)

    def on_trial_result(self, trial_id: str, result: dict):
        if trial_id not in self.told_before_restore:
            super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        if trial_id in self.told_before_restore:
            self._completed_trials.add(trial_id)  # the study holds its outcome already
            return
        super().on_trial_complete(trial_id, result, error)


def fail_running_trials(study: optuna.Study, keep: set[int] = frozenset()) -> list[int]:
    """Mark the study's RUNNING trials FAIL, except the trial numbers in `keep`; returns the failed
    numbers."""
    stale = [t.number for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
             if t.number not in keep]
    for number in stale:
        study.tell(number, state=optuna.trial.TrialState.FAIL)
    return stale


def make_searcher(space: Space, seed: int, storage: str | None = None, study_name: str | None = None):
    settings = space.search
    sampler = (
        optuna.samplers.RandomSampler(seed=seed)
        if settings.sampler == "random"
        else optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(2, settings.num_samples // 4))
    )
    searcher = StaleFailingOptunaSearch(
        space.optuna_space(),
        # Multi-objective: lists of metrics and modes make OptunaSearch create a study with one
        # direction per objective (TPE and random sampling both handle that in Optuna 5).
        metric=list(settings.objectives) if settings.multi_objective else settings.metric,
        mode=list(settings.objective_modes) if settings.multi_objective else settings.mode,
        points_to_evaluate=space.baseline_points() or None,
        sampler=sampler,
        # A persistent study, named after the search's Tune directory, outlives the driver.
        storage=study_storage(storage) if storage else None,
        study_name=study_name if storage else None,
    )
    return ConcurrencyLimiter(searcher, max_concurrent=settings.max_concurrent)


def study_storage(url: str) -> optuna.storages.RDBStorage:
    """The study's database; a SQLite file's folder is made first (the default is in the storage path)."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.RDBStorage(url)


def make_scheduler(space: Space):
    settings = space.search
    folds = TrialConfig.from_flat(space.fixed).data.total_folds  # one report per fold, over all repeats
    if settings.scheduler == "fifo" or folds < 2:
        return FIFOScheduler()
    return BaselineKeepingASHA(
        space.fixed,
        time_attr="training_iteration",  # one iteration = one fold
        max_t=folds,
        grace_period=min(settings.grace_period, folds),
        reduction_factor=settings.reduction_factor,
    )


class BaselineKeepingASHA(ASHAScheduler):
    """ASHA that never stops a baseline (a trial adding no synthetic image) before its last fold.

    The leaderboard, `evaluate` and the promotion gate compare every GAN trial with the baselines;
    a baseline stopped after one fold would be compared on one fold (about a fifth of the data)
    against trials measured on all of them. Baselines still enter the rungs, so they raise the bar
    the GAN trials must clear; they just always run to the end."""

    def __init__(self, fixed: dict, **kwargs) -> None:
        super().__init__(**kwargs)
        self._fixed = dict(fixed)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        action = super().on_trial_result(tune_controller, trial, result)
        unfinished = result.get(self._time_attr, 0) < self._max_t
        if action == TrialScheduler.STOP and unfinished and self.is_baseline(trial.config):
            self._num_stopped -= 1  # counted as stopped by ASHA's bookkeeping; it goes on
            return TrialScheduler.CONTINUE
        return action

    def is_baseline(self, config: dict) -> bool:
        return TrialConfig.from_flat({**self._fixed, **config}).baseline_name() is not None


class SearchInterrupted(Exception):
    """Ctrl-C ended the search early; Tune saved its state and the search record stays resumable."""

    def __init__(self, parent_run_id: str) -> None:
        super().__init__(f"search interrupted (parent run {parent_run_id} marked KILLED)")
        self.parent_run_id = parent_run_id


class ClusterError(RuntimeError):
    """The Ray cluster named by --address cannot be joined; the message says what to check."""


def init_ray(options: SearchOptions, num_cpus: int | None = None) -> None:
    if not ray.is_initialized():
        join_ray(options, num_cpus)
    from .resources import trial_unfit

    # Ray only warns, every minute and forever, about a trial no node can place: refuse it here,
    # before the parent run exists.
    if reason := trial_unfit(options.cpus_per_trial, options.gpus_per_trial):
        raise ClusterError(reason)


def join_ray(options: SearchOptions, num_cpus: int | None) -> None:
    if options.address:
        try:
            ray.init(address=options.address, **ray_output(options))
        except ConnectionError as exc:
            raise ClusterError(
                f"cannot join the Ray cluster at --address {options.address}: {exc}. Is `ray start --head` running "
                "there? A cluster with token authentication also needs RAY_AUTH_MODE=token here, and its token "
                "(RAY_AUTH_TOKEN or ~/.ray/auth_token) as on its nodes"
            ) from exc
    else:
        start_local_ray(options, num_cpus)


def ray_output(options: SearchOptions) -> dict:
    """ray.init's arguments for what Ray prints (search/logs.py): trial processes' output and
    INFO lines only with --verbose."""
    return {"log_to_driver": options.verbose, "logging_config": ray_logging_config(options.verbose)}


def start_local_ray(options: SearchOptions, num_cpus: int | None) -> None:
    """A fresh Ray instance on this machine, never one that a `ray start` left behind; its
    processes die with this driver, even a SIGKILLed one (local_cluster.Watchdog)."""
    from ray._common.utils import get_default_ray_temp_dir

    temp_dir = local_cluster.short_temp_dir(get_default_ray_temp_dir())
    if temp_dir and options.verbose:
        print(f"gantune: Ray's temp dir {get_default_ray_temp_dir()} is too long for its unix sockets; "
              f"using {temp_dir}", file=sys.stderr, flush=True)
    watchdog = local_cluster.start_watchdog()
    context = ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, _temp_dir=temp_dir,
                       **ray_output(options))
    if watchdog is not None:
        watchdog.watch_session(context.address_info["session_dir"])


def run_search(
    space: Space, data: DataSplits, options: SearchOptions, skipped_files: list[str] = ()
) -> tuple[list[dict], str]:
    """Run the whole search; returns (leaderboard rows best first, parent run id)."""
    resolved = {**space.resolved(), "options": options.to_dict()}  # as printed; compared on --resume
    # A resume that would be refused (another --seed, a changed space) is refused before Ray starts.
    earlier = search_to_resume(options, resolved)
    # Ray first: a cluster that cannot be joined must not leave a FAILED parent run behind.
    auto = space.search.max_concurrent == AUTO_CONCURRENCY
    # A local cluster gets the CPUs the trials use ('auto': the machine's, as Ray detects them).
    init_ray(options, num_cpus=None if auto else max(int(options.cpus_per_trial * space.search.max_concurrent), 1))
    if auto:  # resolved (and compared on --resume) as 'auto'; the number is the cluster's of today
        space = with_cluster_concurrency(space, options)
    try:  # before the parent run too: a refused cluster leaves nothing behind
        preflight.preflight(options.address, options.tracking_uri, resume.storage_uri(options.storage_path))
    except preflight.PreflightError as exc:
        raise ClusterError(str(exc)) from exc
    client = MlflowClient(options.tracking_uri)
    record = open_search(client, resolved, options, earlier)
    try:
        return run_opened(space, data, options, skipped_files, client, record, resumed=earlier is not None)
    finally:  # ended without marking the record (an exception past run_opened): renew the lease no more
        lease.stop_renewing(record.lease.token)


def run_opened(
    space: Space, data: DataSplits, options: SearchOptions, skipped_files, client: MlflowClient, record: SearchRecord,
    resumed: bool,
) -> tuple[list[dict], str]:
    """run_search once the search's parent run and record are open and its lease is held."""
    experiment_id, parent_run_id = record.experiment_id, record.parent_run_id
    try:
        tracking.log_dataset(client, parent_run_id, data, skipped_files)
    except Exception as exc:  # the artifact store refused the first write of the search
        raise stopped(client, options, record, exc) from exc
    settings = StudySettings(
        fixed=space.fixed,
        data=data,
        tracking_uri=options.tracking_uri,
        experiment_id=experiment_id,
        parent_run_id=parent_run_id,
        seed=options.seed,
        cpus_per_trial=options.cpus_per_trial,
        gpus_per_trial=options.gpus_per_trial,
        metric=space.search.metric,
        mode=space.search.mode,
        objectives=tuple(zip(space.search.objectives, space.search.objective_modes)),
        gan_cache=cache_location(options.storage_path, options.gan_cache, options.no_gan_cache),
        keep_artifacts=options.keep_artifacts,
    )
    try:
        tuner = (
            restore_tuner(settings, options, record)
            if resumed
            else make_tuner(space, settings, options, record)
        )
        results = tuner.fit()  # Ctrl-C: Tune saves its state and returns early (callbacks.InterruptWatch)
        interrupted = callbacks.INTERRUPTED.is_set()
        if options.optuna_storage and not interrupted:
            fail_stale_optuna_trials(options.optuna_storage, record.tune_name)
        rows = []
        if not interrupted:  # an interrupted search's leaderboard waits for --resume
            rows = leaderboard_rows(results, space)
            tracking.log_trial_deltas(client, experiment_id, parent_run_id, rows, space.search.metric)
        status = "KILLED" if interrupted else "FINISHED"
        table = format_table(rows, leaderboard_columns(space)) if rows else ""
        tracking.finish_parent_run(client, parent_run_id, rows, space.search.metric, table, status)
        resume.mark(options.storage_path, record, "interrupted" if interrupted else "finished")
    except Exception as exc:  # Tune, MLflow or the storage failed: close the search, say why
        raise stopped(client, options, record, exc) from exc
    if interrupted:
        raise SearchInterrupted(parent_run_id)
    if rows:
        for note in plots.log_search_plots(client, space, parent_run_id, rows, leaderboard_columns(space)):
            print(f"gantune: {note}")
    if options.keep_artifacts == "best":
        keep_best_generator(client, experiment_id, parent_run_id)
    return rows, parent_run_id


def keep_best_generator(client: MlflowClient, experiment_id: str, parent_run_id: str) -> None:
    """--keep-artifacts best: delete the generators of every trial but the best (as promote ranks
    them); a store that refuses is reported, the search stays finished (`gantune gc` can retry)."""
    from .gc import keep_best_only, megabytes

    try:
        deleted = keep_best_only(client, experiment_id, parent_run_id)
    except Exception as exc:  # noqa: BLE001 - the results are in; only the cleanup failed
        print(f"gantune: warning: --keep-artifacts best: could not delete the other trials' generators "
              f"({tracking.failure_text(exc)}); run gantune gc --keep-top 1", file=sys.stderr)
        return
    freed = sum(d.size for d in deleted)
    print(f"gantune: --keep-artifacts best: deleted the generators of {len(deleted)} other trial(s), "
          f"{megabytes(freed)}")


def with_cluster_concurrency(space: Space, options: SearchOptions) -> Space:
    """`space` with search.max_concurrent 'auto' replaced by the cluster's schedulable slots."""
    from .resources import cluster_slots

    slots = cluster_slots(options.cpus_per_trial, options.gpus_per_trial)
    print(f"gantune: --max-concurrent auto: {slots} trials at once ({options.cpus_per_trial:g} CPU, "
          f"{options.gpus_per_trial:g} GPU per trial on the cluster's nodes)", flush=True)
    return space.with_overrides({"search.max_concurrent": slots})


class SearchFailed(RuntimeError):
    """A search stopped by an error outside its trials (an unwritable artifact store or storage
    path, a Tune error): its parent run is FAILED with the reason as a tag, and its record says
    'failed' with the reason, so `--resume` can continue it once the cause is fixed."""


def stopped(client: MlflowClient, options: SearchOptions, record: SearchRecord, exc: BaseException) -> SearchFailed:
    """Close the search as FAILED after `exc` (each step on its own: the store that failed may be
    the one a step needs) and the error to show instead of a traceback."""
    reason = tracking.failure_text(exc)
    notes = []
    try:
        tracking.close_failed(client, record.parent_run_id, reason)
    except Exception as again:  # noqa: BLE001 - the tracking server itself is gone
        notes.append(f"the parent run could not be closed ({tracking.failure_text(again)})")
    try:
        resume.mark(options.storage_path, record, "failed", reason)
    except Exception as again:  # noqa: BLE001 - the storage path is gone
        notes.append(f"the search record could not be updated ({tracking.failure_text(again)})")
    closed = "; ".join(notes) or f"parent run {record.parent_run_id} is FAILED with that reason"
    return SearchFailed(
        f"the search stopped: {reason}\n  {closed}. Fix the cause, then continue it with the same command and "
        f"--resume {record.parent_run_id}"
    )


def warn_if_unfinished(options: SearchOptions) -> None:
    """A new search starts beside the experiment's unfinished ones (each search has its own
    record): name them, since a killed driver's runs stay RUNNING until that search is resumed (one
    whose driver still runs, its lease live, is only noted). Nothing is swept here: that is --resume's."""
    try:
        records = resume.read_records(options.storage_path, options.experiment)
        unfinished = [r for r in records if r.status != "finished"]
    except (resume.ResumeError, OSError):
        return
    for last in unfinished:
        if last.lease is not None and last.lease.live():
            print(f"gantune: note: a search of '{options.experiment}' ({last.describe()}) is running; this new search "
                  "starts beside it.", file=sys.stderr, flush=True)
            continue
        print(
            f"gantune: warning: a search of '{options.experiment}' ({last.describe()}) never finished: its driver "
            "was killed or stopped; its RUNNING runs stay RUNNING. This new search starts "
            f"beside it. To continue it instead, stop now (Ctrl-C) and rerun with --resume {last.parent_run_id}.",
            file=sys.stderr, flush=True,
        )


def open_search(
    client: MlflowClient, resolved: dict, options: SearchOptions, earlier: SearchRecord | None
) -> SearchRecord:
    """The record of a new search (parent run created, `resolved` logged on it), or `earlier`,
    the search `--resume` continues (its parent run reopened). A new search's storage path is
    tried first, so an unwritable one leaves no run behind."""
    if earlier is not None:
        record = resume.acquire(options.storage_path, earlier, taking_over=True)  # LeaseHeld: it still runs
        client.update_run(earlier.parent_run_id, status="RUNNING")
        return record
    resume.check_writable(options.storage_path)
    warn_if_unfinished(options)
    experiment_id = tracking.ensure_experiment(client, options.experiment, options.tracking_uri)
    tracking.set_runs_view(client, experiment_id, resolved)  # the columns of this search's space
    try:
        # start_parent_run closes its run FAILED on an error, with the reason
        parent_run_id = tracking.start_parent_run(client, experiment_id, resolved)
    except Exception as exc:
        raise SearchFailed(f"the search could not start: {tracking.failure_text(exc)} (the tracking store's artifact "
                           "location must be writable; its parent run is FAILED with that reason)") from exc
    record = SearchRecord(
        experiment=options.experiment, experiment_id=experiment_id, parent_run_id=parent_run_id,
        tune_name=resume.tune_name(options.experiment, parent_run_id), tracking_uri=options.tracking_uri,
        resolved=resolved, started=resume.now_utc(),
    )
    try:
        return resume.acquire(options.storage_path, record, taking_over=False)
    except Exception as exc:
        raise stopped(client, options, record, exc) from exc


def make_trainable(settings: StudySettings, options: SearchOptions):
    resources = {"cpu": options.cpus_per_trial, "gpu": options.gpus_per_trial}
    return tune.with_resources(tune.with_parameters(trainable, settings=settings), resources)


def make_tuner(space: Space, settings: StudySettings, options: SearchOptions, record: SearchRecord) -> tune.Tuner:
    callback_args = (options.tracking_uri, record.experiment_id, record.parent_run_id)
    reporter, progress_callbacks = make_progress(space, quiet=options.quiet)
    optuna_quiet(options.verbose)  # OptunaSearch logs "A new study created" at INFO
    return tune.Tuner(
        make_trainable(settings, options),
        tune_config=tune.TuneConfig(
            search_alg=make_searcher(space, options.seed, options.optuna_storage, record.tune_name),
            scheduler=make_scheduler(space),
            num_samples=space.search.num_samples,
            # A multi-objective searcher holds its own metrics and modes; Tune must not get one.
            metric=None if space.search.multi_objective else space.search.metric,
            mode=None if space.search.multi_objective else space.search.mode,
            # A fresh actor per trial re-imports torch/MONAI/MLflow (10-20 s on 2 busy cores);
            # reuse cut the demo's Tune overhead from 0.24 to 0.13 (docs/performance.md). The
            # trainable keeps no module-level state, and sets threads and device per trial.
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=record.tune_name,
            storage_path=resume.storage_uri(options.storage_path),
            failure_config=tune.FailureConfig(max_failures=options.max_failures),
            # No CheckpointConfig(num_to_keep): each fold's checkpoint is a few kB, and with
            # num_to_keep set Tune forces an experiment snapshot at every fold and warns about it.
            # Pickled with the Tuner: a restored search closes and sweeps runs the same way.
            callbacks=[callbacks.CloseTrialRuns(*callback_args), callbacks.SweepTrialRuns(*callback_args),
                       callbacks.InterruptWatch(), *progress_callbacks],
            verbose=options.tune_verbosity,
            progress_reporter=reporter,
        ),
    )


def search_to_resume(options: SearchOptions, resolved: dict) -> SearchRecord | None:
    """The search `--resume` continues (a ResumeError says why it cannot), or None to start one.
    `--resume auto` continues the experiment's newest unfinished search with this space and these
    options that Tune saved a state of; otherwise (none yet, finished, another configuration, or
    killed before Tune's first checkpoint) it starts a new search, so the same command is right for
    a first run and a retry."""
    if not options.resume:
        return None
    if options.resume == "auto":
        return resume.auto_record(options.storage_path, options.experiment, resolved, options.tracking_uri,
                                  tune.Tuner.can_restore)
    return resume.record_to_resume(options.storage_path, options.experiment, resolved, options.tracking_uri,
                                   options.resume)


def restore_tuner(settings: StudySettings, options: SearchOptions, record: SearchRecord) -> tune.Tuner:
    """Trials keep their ids (so their MLflow runs are reopened, not duplicated); finished ones
    are kept, unfinished ones go on from the fold after their last report (a per-fold checkpoint),
    errored ones stay errored; the searcher's state comes back
    from Tune's experiment checkpoint."""
    path = resume.tune_path(options.storage_path, record)
    if not tune.Tuner.can_restore(path):
        raise resume.ResumeError(
            f"{path}: no Tune experiment state to resume (the driver died before Tune's first checkpoint); "
            "start a new search"
        )
    return tune.Tuner.restore(
        path, trainable=make_trainable(settings, options),
        resume_unfinished=True, resume_errored=False, restart_errored=False,
    )


def fail_stale_optuna_trials(storage: str, study_name: str) -> None:
    """A persistent study can hold trials of a killed driver that no Tune trial will report:
    mark them FAIL so the study has no trial left RUNNING (at the end of a finished search; a
    resumed search also fails them at restore, StaleFailingOptunaSearch)."""
    fail_running_trials(optuna.load_study(study_name=study_name, storage=storage))
