"""`gantune gc`: delete the heavy artifacts of an experiment's trials that are not worth keeping,
and `--keep-artifacts best`'s cleanup at the end of a search.

The heavy artifact is a trial's generator model (`generator/`: every class's G and D, about 1 MB
per trial at demo widths, far more at paper widths); plots, sample grids and configs are a few
tens of kB and stay, so every trial can still be compared. Per search (parent run) of the
experiment, the top N trials as `promote` and `evaluate` rank them (leaderboard.rank_for_selection,
with the search's own metric, mode and rank_by) keep theirs, and so does every run a registered
model version was made from. A search that is still RUNNING is skipped. Without `--yes` it only
says what it would delete and the bytes that would be freed."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from .leaderboard import rank_for_selection
from .runs import (
    RunsError,
    add_fold_values,
    experiment_not_found,
    resolved_space,
    space_from_resolved,
    trial_id_of,
    trial_runs,
)

HEAVY_ARTIFACTS = ("generator",)
"""Artifact paths of a trial run that gc deletes (the rest stays)."""
SEARCH_FILTER = "tags.`gantune.role` = 'search'"


class GcError(ValueError):
    """An experiment gc cannot work on; the message names it."""


@dataclass(frozen=True)
class Deletion:
    """One heavy artifact folder of one trial run."""

    run_id: str
    trial_id: str
    path: str
    size: int
    """Bytes of every file under it."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--experiment", required=True, help="MLflow experiment whose trials to clean up")
    p.add_argument("--keep-top", type=int, required=True, metavar="N",
                   help="trials per search that keep their generator model (ranked as promote ranks them; >= 0)")
    p.add_argument("--yes", action="store_true", help="delete; without it, only print what would be deleted")


def artifact_size(client, run_id: str, path: str) -> int:
    """Bytes under `path` of the run's artifacts (0 when there is none)."""
    total = 0
    for info in client.list_artifacts(run_id, path):
        total += artifact_size(client, run_id, info.path) if info.is_dir else (info.file_size or 0)
    return total


def registered_run_ids(client) -> set[str]:
    """Runs a registered model version was made from: their generators are never deleted."""
    return {v.run_id for v in client.search_model_versions(max_results=10_000) if v.run_id}


def search_deletions(client, experiment_id: str, search, keep_top: int, protected: set[str]) -> list[Deletion]:
    """The heavy artifacts of one search's trials outside its top `keep_top`."""
    space = space_from_resolved(resolved_space(client, search.info.run_id, GcError), "resolved space")
    metric, mode = space.search.metric, space.search.mode
    runs = add_fold_values(client, trial_runs(client, experiment_id, search.info.run_id), metric)
    ranked = rank_for_selection(runs, metric, mode, space.fixed, space.search.rank_by)
    keep = {r.info.run_id for r in ranked[:keep_top]} | protected
    deletions = []
    for run in runs:
        if run.info.run_id in keep:
            continue
        for path in HEAVY_ARTIFACTS:
            if size := artifact_size(client, run.info.run_id, path):
                deletions.append(Deletion(run.info.run_id, trial_id_of(run), path, size))
    return deletions


def plan(client, experiment_name: str, keep_top: int) -> tuple[list[Deletion], list[str]]:
    """(what to delete, the searches skipped because they still run)."""
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        raise GcError(f"--experiment: {experiment_not_found(client, experiment_name)}")
    protected = registered_run_ids(client)
    deletions, running = [], []
    for search in client.search_runs([experiment.experiment_id], SEARCH_FILTER, max_results=10_000):
        if search.info.status == "RUNNING":
            running.append(search.info.run_id)
            continue
        try:
            deletions += search_deletions(client, experiment.experiment_id, search, keep_top, protected)
        except RunsError as exc:  # a search that never logged its space: nothing to rank it by
            raise GcError(str(exc)) from exc
    return deletions, running


def delete(client, deletion: Deletion) -> None:
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    artifact_uri = client.get_run(deletion.run_id).info.artifact_uri
    get_artifact_repository(artifact_uri).delete_artifacts(deletion.path)


def keep_best_only(client, experiment_id: str, search_run_id: str) -> list[Deletion]:
    """--keep-artifacts best, when a search ends: the generators of all its trials but the best."""
    deletions = search_deletions(client, experiment_id, client.get_run(search_run_id), 1, registered_run_ids(client))
    for deletion in deletions:
        delete(client, deletion)
    return deletions


def megabytes(size: int) -> str:
    return f"{size / 1e6:.2f} MB ({size} bytes)"


def gc_main(args) -> int:
    import mlflow
    from mlflow.tracking import MlflowClient

    if args.keep_top < 0:
        raise GcError(f"--keep-top must be >= 0, got {args.keep_top}")
    mlflow.set_tracking_uri(args.tracking_uri)  # mlflow-artifacts:/ URIs resolve against the tracking server
    client = MlflowClient(args.tracking_uri)
    deletions, running = plan(client, args.experiment, args.keep_top)
    for run_id in running:
        print(f"skipped search {run_id}: still RUNNING")
    verb = "deleting" if args.yes else "would delete"
    for d in deletions:
        print(f"{verb} runs:/{d.run_id}/{d.path} (trial {d.trial_id}): {megabytes(d.size)}")
        if args.yes:
            delete(client, d)
    total = sum(d.size for d in deletions)
    if args.yes:
        print(f"freed {megabytes(total)} in {len(deletions)} artifact folder(s)")
    else:
        print(f"dry run: {megabytes(total)} in {len(deletions)} artifact folder(s) would be freed; "
              "nothing deleted (rerun with --yes)")
    return 0
