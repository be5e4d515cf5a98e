"""The thin Ray Tune adapter around one trial (trainables/trial.py computes it): the search's
constants shipped to every trial, the failure and device policy, and `trainable`, which also owns
the trial's MLflow run (through trainables/tracking.py)."""

from __future__ import annotations

import os
import tempfile
import zipfile
from dataclasses import dataclass

import torch

from . import outcome
from .config import TrialConfig
from .data.datasets import DataSplits
from .loop import DivergedError
from .gans.cache import GeneratorCache
from .synth_use import SelectionError
from .trial import FoldResult, fold_metrics, gan_totals, load_fold_results, mean_metrics, run_trial, save_fold_results


@dataclass(frozen=True)
class StudySettings:
    """Constants of one search, shipped to every trial through tune.with_parameters."""

    fixed: dict
    """The space file's fixed values, flat ("gan.steps": 300, ...)."""
    data: DataSplits
    """The dataset, loaded and validated once on the driver."""
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    # Seed and resources come from the driver's SearchOptions (search/options.py), the one place
    # of their defaults.
    seed: int
    cpus_per_trial: float
    gpus_per_trial: float
    """GPU share per trial; a fraction below 1 also caps the trial's CUDA memory to that share."""
    metric: str = "val_auc"
    """The searched metric; a trial that fails for good reports its worst value to the searcher."""
    mode: str = "max"
    """'max' or 'min', the direction of `metric`."""
    objectives: tuple[tuple[str, str], ...] = ()
    """Multi-objective searches: every (metric, mode); a trial that fails for good reports the
    worst value of each, so the multi-objective searcher can record it."""
    gan_cache: str | None = None
    """Folder or URI of the generator cache every trial reads and writes (None: off); by default
    under the search's storage path, so every node of a cluster sees the same entries."""
    keep_artifacts: str = "complete"
    """'complete': a trial's generator model is logged once, at its last fold (none for a trial
    stopped early; 'best' likewise, the driver deleting all but the best trial's at the end); 'all': at
    every fold, as before (see SearchOptions.keep_artifacts)."""


class TrialOOMError(RuntimeError):
    """CUDA ran out of memory in a trial; retrying with the same settings would fail again."""


OOM_HINT = "lower gan.batch_size / classifier.batch_size, or raise --gpus-per-trial (a larger GPU share)"


def final_failure(exc: BaseException) -> Exception | None:
    """The failures that no retry with the same config can fix (None for any other error, which
    Tune retries up to --max-failures)."""
    if isinstance(exc, (DivergedError, SelectionError)):
        return exc
    if isinstance(exc, torch.OutOfMemoryError):
        first_line = (str(exc).splitlines() or [type(exc).__name__])[0]  # the allocator's summary line
        return TrialOOMError(f"CUDA out of memory: {first_line}; {OOM_HINT}")
    return None


def failure_report(exc: Exception, settings: StudySettings, folds_done: int) -> dict[str, float]:
    """The result a trial that failed for good reports: the worst value of the metric, so the
    searcher records it (an Optuna trial never stays RUNNING) and steers away from it."""
    objectives = settings.objectives or ((settings.metric, settings.mode),)
    worst = {metric: 0.0 if mode == "max" else float("inf") for metric, mode in objectives}
    return {**worst, "folds_done": folds_done, failure_outcome(exc)[0]: 1}


def failure_outcome(exc: Exception) -> tuple[str, str]:
    """(the flag a reported failure sets in its result, its outcome) of a `final_failure`."""
    if isinstance(exc, DivergedError):
        return "diverged", outcome.DIVERGED
    if isinstance(exc, SelectionError):
        return "rejected", outcome.REJECTED
    return "oom", outcome.OOM


def assigned_gpu_ids() -> list[str]:
    """The GPUs Ray assigned to this trial's actor ([] for a zero-GPU trial, or outside Ray).

    Asked of Ray, not of torch: Ray 2.60 no longer blanks CUDA_VISIBLE_DEVICES for a zero-GPU
    actor, so on a GPU node `torch.cuda.is_available()` is true for CPU trials too."""
    import ray

    return [str(i) for i in ray.get_gpu_ids()] if ray.is_initialized() else []


def trial_device(gpus_per_trial: float, gpu_ids: list[str]) -> torch.device:
    """The trial's device: the CPU unless Ray assigned it a GPU (`gpu_ids`, from
    `assigned_gpu_ids`), else that GPU. A fraction also caps the process's CUDA memory on it, so
    trials packed on one GPU cannot starve each other."""
    if gpus_per_trial <= 0 or not gpu_ids or not torch.cuda.is_available():
        return torch.device("cpu")
    # Ray sets CUDA_VISIBLE_DEVICES to the assigned ids, so torch numbers them from 0 in that
    # order; with RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES the ids are torch's own numbers.
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    index = visible.index(gpu_ids[0]) if gpu_ids[0] in visible else int(gpu_ids[0])
    if gpus_per_trial < 1:
        torch.cuda.set_per_process_memory_fraction(gpus_per_trial, index)
    return torch.device("cuda", index)


def trainable(config: dict, settings: StudySettings) -> None:
    """Ray Tune function trainable: one tune.report per finished fold (running mean), so ASHA can
    stop a poor configuration after one or two folds."""
    from ray import tune

    from . import tracking

    torch.set_num_threads(max(1, int(settings.cpus_per_trial)))
    cfg = TrialConfig.from_flat({**settings.fixed, **config}, seed=settings.seed)
    device = trial_device(settings.gpus_per_trial, assigned_gpu_ids())
    trial_id = tune.get_context().get_trial_id()
    run = tracking.TrialRun.open(settings, trial_id, params=config, cfg=cfg)
    # A trial restored after a killed or interrupted driver (or retried after an error) goes on
    # from the fold after the last one it reported; each report carries its folds as a checkpoint.
    checkpoint = tune.get_checkpoint()
    results: list[FoldResult] = []
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            results = load_fold_results(directory)
    known = len(results)
    # Tune's experiment snapshot lags its trials: folds reported after the last snapshot were
    # checkpointed and logged, but the restored trial only hears of the snapshot's checkpoint.
    results = newest_fold_checkpoint(results)

    def report(folds: list[FoldResult]) -> None:
        if len(folds) == cfg.data.total_folds:
            run.finish()  # before the last report: the scheduler may stop the trial at any report
        with tempfile.TemporaryDirectory() as directory:
            save_fold_results(folds, directory)
            # Every fold so far, not just this one: the last result then holds all of them, which
            # the leaderboard pairs with the real_only trial's (search.rank_by paired_lcb).
            every_fold = {k: v for r in folds for k, v in fold_metrics(r).items()}
            means = {**mean_metrics(folds), **gan_totals(folds)}
            tune.report({**means, **every_fold, "folds_done": len(folds), tracking.RUN_ID_KEY: run.run_id},
                        checkpoint=tune.Checkpoint.from_directory(directory))

    # Replayed to Tune only (the scheduler and searcher did not hear of them); MLflow has them.
    for count in range(known + 1, len(results) + 1):
        report(results[:count])  # the last fold's report finishes the run
    if len(results) == cfg.data.total_folds:  # the driver died after the last fold, before the trial returned
        if known == len(results):
            run.finish()  # TrialRun.open reopened the run; there was nothing left to report
        return

    def on_fold(result: FoldResult) -> None:
        results.append(result)
        run.log_fold(result, results, {**mean_metrics(results), **gan_totals(results)})
        report(results)

    try:
        cache = GeneratorCache(settings.gan_cache) if settings.gan_cache else None
        run_trial(cfg, settings.data, device, on_fold, skip_folds=len(results), gan_cache=cache)
    except Exception as exc:
        failure = final_failure(exc)
        if failure is None:
            run.fail(exc)
            raise
        # Reported, not raised: Tune would retry an error with the very same config.
        run.fail(failure, failure_outcome(failure)[1])
        tune.report({**failure_report(failure, settings, len(results)), tracking.RUN_ID_KEY: run.run_id})


def newest_fold_checkpoint(restored: list[FoldResult]) -> list[FoldResult]:
    """The folds of the newest readable checkpoint in this trial's storage folder when it holds
    more than `restored` (the checkpoint Tune handed back), else `restored`. Every checkpoint of
    a trial comes from the same config and seed, so a later one extends the earlier ones."""
    import pyarrow.fs
    from ray import tune

    storage = tune.get_context().get_storage()
    fs = storage.storage_filesystem
    found = fs.get_file_info(pyarrow.fs.FileSelector(storage.trial_fs_path, allow_not_found=True))
    newest = restored
    for info in sorted(found, key=lambda i: i.base_name, reverse=True):
        if info.type != pyarrow.fs.FileType.Directory or not info.base_name.startswith("checkpoint_"):
            continue
        try:
            with tune.Checkpoint(info.path, filesystem=fs).as_directory() as directory:
                folds = load_fold_results(directory)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):  # cut short by the kill: an older one will do
            continue
        if len(folds) > len(newest):
            newest = folds
    return newest
