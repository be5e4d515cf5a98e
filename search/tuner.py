"""The driver: start (or join) Ray, open the parent MLflow run, run the Tuner, write the
leaderboard. Ray's one home on the driver side."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import optuna
import ray
from mlflow.tracking import MlflowClient
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import ConcurrencyLimiter
from ray.tune.search.optuna import OptunaSearch

from gantune.trainables.data.datasets import DataSplits
from gantune.trainables.pipeline import StudySettings, trainable

from . import tracking
from .space import Space


@dataclass(frozen=True)
class RunOptions:
    """Where and how a search runs; everything not about the space itself."""

    experiment: str
    tracking_uri: str
    storage_path: str
    address: str | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    seed: int = 0
    verbose: int = 1


def make_searcher(space: Space, seed: int):
    settings = space.search
    sampler = (
        optuna.samplers.RandomSampler(seed=seed)
        if settings.sampler == "random"
        else optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(2, settings.num_samples // 4))
    )
    searcher = OptunaSearch(
        space.optuna_space(),
        metric=settings.metric,
        mode=settings.mode,
        points_to_evaluate=space.baseline_points() or None,
        sampler=sampler,
    )
    return ConcurrencyLimiter(searcher, max_concurrent=settings.max_concurrent)


def make_scheduler(space: Space):
    settings = space.search
    folds = int(space.fixed.get("data.folds", 5))
    if settings.scheduler == "fifo" or folds < 2:
        return FIFOScheduler()
    return ASHAScheduler(
        time_attr="training_iteration",  # one iteration = one fold
        max_t=folds,
        grace_period=min(settings.grace_period, folds),
        reduction_factor=settings.reduction_factor,
    )


def init_ray(options: RunOptions, num_cpus: int | None = None) -> None:
    if ray.is_initialized():
        return
    if options.address:
        ray.init(address=options.address, log_to_driver=options.verbose > 0)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=options.verbose > 0)


def run_search(space: Space, data: DataSplits, options: RunOptions) -> tuple[list[dict], str]:
    """Run the whole search; returns (leaderboard rows best first, parent run id)."""
    client = MlflowClient(options.tracking_uri)
    experiment_id = tracking.ensure_experiment(client, options.experiment, options.tracking_uri)
    parent_run_id = tracking.start_parent_run(client, experiment_id, space.resolved())
    settings = StudySettings(
        fixed=space.fixed,
        data=data,
        tracking_uri=options.tracking_uri,
        experiment_id=experiment_id,
        parent_run_id=parent_run_id,
        seed=options.seed,
        cpus_per_trial=options.cpus_per_trial,
    )
    failed = True
    try:
        init_ray(options, num_cpus=max(int(options.cpus_per_trial * space.search.max_concurrent), 1))
        resources = {"cpu": options.cpus_per_trial, "gpu": options.gpus_per_trial}
        tuner = tune.Tuner(
            tune.with_resources(tune.with_parameters(trainable, settings=settings), resources),
            tune_config=tune.TuneConfig(
                search_alg=make_searcher(space, options.seed),
                scheduler=make_scheduler(space),
                num_samples=space.search.num_samples,
                metric=space.search.metric,
                mode=space.search.mode,
            ),
            run_config=tune.RunConfig(
                name=f"{options.experiment}-{parent_run_id[:8]}",
                storage_path=str(Path(options.storage_path).resolve()) if "://" not in options.storage_path else options.storage_path,
                failure_config=tune.FailureConfig(max_failures=0),
                callbacks=[tracking.CloseTrialRuns(options.tracking_uri, experiment_id, parent_run_id)],
                verbose=options.verbose,
            ),
        )
        results = tuner.fit()
        failed = False
    finally:
        rows = []
        if not failed:
            rows = tracking.leaderboard_rows(results, space)
            tracking.log_trial_deltas(client, experiment_id, parent_run_id, rows, space.search.metric)
        table = tracking.format_table(rows, leaderboard_columns(space)) if rows else ""
        tracking.finish_parent_run(client, parent_run_id, rows, space.search.metric, table, failed)
    return rows, parent_run_id


def leaderboard_columns(space: Space) -> list[str]:
    metric = space.search.metric
    deltas = [f"delta_{metric}_vs_{name}" for name in space.search.baselines]
    if len(deltas) > 1:
        deltas.append(f"delta_{metric}_vs_best_baseline")
    return ["trial_id", metric, *deltas, "baseline", "folds_done", "status", *sorted(space.domains)]
