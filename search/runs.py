"""MLflow reads of a finished search: an experiment's latest search, its trial runs, the space it
resolved (the one reader of `config/resolved_space.json`), a trial's configuration, and the
whole search as a `SearchView` for `gantune report`. The writes live in search/tracking.py."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .space import Space, make_search_settings

EVALUATION_FILTER = "tags.`gantune.role` = 'evaluation' and tags.`mlflow.parentRunId` = '{parent}'"
TRIAL_FILTER = "tags.`gantune.role` = 'trial' and tags.`mlflow.parentRunId` = '{parent}'"
RESOLVED_SPACE = "config/resolved_space.json"
TRIAL_CONFIG = "config/trial_config.json"


class RunsError(ValueError):
    """An MLflow record of a search that is missing or unreadable; the message names it. Readers
    take the command's own error class instead, so the command reports it as its own."""


def latest_search(client, experiment_id: str, finished: bool = True):
    """The experiment's most recently started search that ended (a running one may still change),
    or with finished=False the most recent one in any state (a dashboard watches a running one)."""
    runs = client.search_runs(
        [experiment_id],
        filter_string="tags.`gantune.role` = 'search'" + (" and attributes.status = 'FINISHED'" if finished else ""),
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0] if runs else None


def experiment_and_latest_search(client, experiment_name: str, error: type[Exception] = RunsError):
    """(experiment, its latest finished search run), or `error` naming what is missing."""
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        raise error(experiment_not_found(client, experiment_name))
    search = latest_search(client, experiment.experiment_id)
    if search is None:
        raise error(f"experiment '{experiment_name}' has no finished search (tag gantune.role=search)")
    return experiment, search


def experiment_not_found(client, experiment_name: str) -> str:
    """'no experiment' naming the store looked in and the experiments it has (the usual cause: a
    command run in another folder than the search, so on another default store)."""
    from .tracking import PER_FOLDER_HINT

    from .guards import did_you_mean

    names = sorted(e.name for e in client.search_experiments() if e.name != "Default")
    has = f"it has {', '.join(repr(n) for n in names)}" if names else "it has no experiments"
    return (f"no MLflow experiment named '{experiment_name}' in {client.tracking_uri} ({has})"
            f"{did_you_mean(experiment_name, names)}; {PER_FOLDER_HINT}")


def trial_runs(client, experiment_id: str, parent_run_id: str, extra_filter: str = "", order_by=None) -> list:
    """The trial runs of one search (optionally narrowed by an extra `and ...` filter clause)."""
    query = TRIAL_FILTER.format(parent=parent_run_id) + (f" and {extra_filter}" if extra_filter else "")
    return client.search_runs([experiment_id], query, order_by=order_by, max_results=10_000)


def evaluation_runs(client, experiment_id: str, search_run_id: str) -> list:
    """The `gantune evaluate` runs of one search, newest first."""
    return client.search_runs([experiment_id], EVALUATION_FILTER.format(parent=search_run_id), max_results=1000,
                              order_by=["attributes.start_time DESC"])


def add_fold_values(client, runs: list, metric: str) -> list:
    """`runs` with each one's per-fold values of `metric` also under `fold{i}_<metric>` in
    run.data.metrics, the keys leaderboard.fold_values reads (a trial's Tune result carries them
    so). MLflow holds them as one metric `fold_<metric>` with step = fold index, which keeps the
    runs table to one column per metric; the latest value per step wins (a retried fold)."""
    from gantune.trainables.metrics import fold_metric_key

    for run in runs:
        history = client.get_metric_history(run.info.run_id, fold_metric_key(metric))
        for m in sorted(history, key=lambda m: m.timestamp):
            run.data.metrics[f"fold{m.step}_{metric}"] = m.value
    return runs


def trial_id_of(run) -> str:
    """A trial run's Tune trial id (its run id for a run logged without one)."""
    return run.data.tags.get("gantune.trial_id", run.info.run_id)


def read_json(client, run_id: str, path: str, error: type[Exception] = RunsError) -> dict:
    """A JSON artifact of a run, or `error` naming the artifact."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = client.download_artifacts(run_id, path, tmp)
        except Exception as exc:  # MlflowException or OSError, depending on the artifact store
            raise error(f"runs:/{run_id}/{path}: cannot read ({exc})") from exc
        return json.loads(Path(local).read_text())


def resolved_space(client, search_run_id: str, error: type[Exception] = RunsError) -> dict:
    """The search's resolved space as it logged it (fixed values, domains, search settings)."""
    return read_json(client, search_run_id, RESOLVED_SPACE, error)


def space_from_resolved(resolved: dict, source: str) -> Space:
    """The Space a search logged as config/resolved_space.json."""
    return Space(
        path=source, name=resolved["name"], fixed=resolved["fixed"], domains=resolved["searched"],
        search=make_search_settings(source, resolved["search"]), smoke_test=bool(resolved.get("smoke_test")),
    )


def trial_config(client, run, error: type[Exception] = RunsError):
    """A trial run's configuration, as it ran (flat keys of config/trial_config.json)."""
    from gantune.trainables.config import TrialConfig

    flat = read_json(client, run.info.run_id, TRIAL_CONFIG, error)
    try:
        return TrialConfig.from_flat(flat)
    except ValueError as exc:
        raise error(f"runs:/{run.info.run_id}/{TRIAL_CONFIG}: {exc}") from exc


def typed_value(text: str, distribution) -> Any:
    """MLflow keeps params as strings; give back the value Optuna sampled."""
    import optuna

    if isinstance(distribution, optuna.distributions.CategoricalDistribution):
        for choice in distribution.choices:
            if str(choice) == text:
                return choice
        raise ValueError(f"{text!r} is not one of {list(distribution.choices)}")
    if isinstance(distribution, optuna.distributions.IntDistribution):
        return int(float(text))
    return float(text)


@dataclass(frozen=True)
class SearchView:
    """A finished search as MLflow holds it: what a report is made of."""

    experiment: str
    search: Any
    """The parent (search) MLflow run."""
    space: Space
    """The space as the search resolved it."""
    trials: dict[str, Any]
    """trial id -> trial MLflow run, in start order."""
    params: dict[str, dict[str, Any]]
    """trial id -> searched values, typed as Optuna sampled them."""

    @property
    def metric(self) -> str:
        return self.space.search.metric


def load_search(client, experiment_name: str, error: type[Exception] = RunsError) -> SearchView:
    """The experiment's latest finished search: its resolved space and its trial runs."""
    experiment, search = experiment_and_latest_search(client, experiment_name, error)
    run_id = search.info.run_id
    space = space_from_resolved(resolved_space(client, run_id, error), f"runs:/{run_id}/{RESOLVED_SPACE}")
    runs = add_fold_values(
        client,
        trial_runs(client, experiment.experiment_id, run_id, order_by=["attributes.start_time ASC"]),
        space.search.metric,
    )
    distributions = space.optuna_space()
    trials, params = {}, {}
    for run in runs:
        trial_id = trial_id_of(run)
        trials[trial_id] = run
        params[trial_id] = {
            key: typed_value(run.data.params[key], dist)
            for key, dist in distributions.items()
            if key in run.data.params
        }
    return SearchView(experiment_name, search, space, trials, params)
