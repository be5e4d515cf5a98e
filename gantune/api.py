"""gantune as a Python library: `gantune.search`, `gantune.evaluate`, `gantune.promote` and
`gantune.generate` (re-exported by the package) do what the commands of the same names do and
return typed results; the CLI (search/cli.py) calls these functions and prints their results.

Importing this module is cheap (dataclasses only): each function imports Ray, MLflow or torch
when it runs, so `gantune --help` stays fast. Bad input raises the error of the step that refused
it (`UsageError` for the search's own arguments), with the message the CLI would print."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any


class UsageError(ValueError):
    """Bad input from the user: the CLI prints it without a traceback and exits 2."""


# --- results ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class SearchResult:
    experiment: str
    experiment_id: str
    parent_run_id: str
    """The search's MLflow parent run (tag gantune.role=search)."""
    tracking_uri: str
    metric: str
    best_trial_id: str | None
    """The first trial of the leaderboard (complete trials rank first); None if none reported."""
    best_config: dict[str, Any]
    """The best trial's searched hyperparameters."""
    best_value: float
    leaderboard: list[dict] = field(repr=False)
    """Every trial, best first, as `gantune search` prints it (trial_id, metric, deltas, outcome, ...)."""
    runs_url: str
    """The experiment's runs page in the MLflow UI (for a local store: the UI started by `ui_command`)."""
    ui_command: str | None
    """For a local store: the command that starts the MLflow UI on it."""
    seconds: float


@dataclass(frozen=True)
class EvaluateResult:
    experiment: str
    run_id: str | None
    """The evaluation run (tag gantune.role=evaluation); None for a dry run."""
    methods: dict[str, dict[str, tuple[float, float]]]
    """Method (best_config, real_only, classic_aug, trivial_aug) -> metric -> (mean, sd) over seeds, test split."""
    metrics: dict[str, float] = field(repr=False)
    """Every metric logged on the evaluation run (paired deltas, confidence intervals, DeLong p)."""
    text: str = field(repr=False)
    """The table the command prints."""


@dataclass(frozen=True)
class PromoteResult:
    promoted: bool
    """True when a model version now holds the alias (the gate passed, or force)."""
    forced: bool
    """Registered although the gate refused it (force=True; tagged gantune.forced=true)."""
    why: str
    """The gate's checks with their numbers, as the command prints them."""
    refusal: str | None
    """Why nothing was registered, and what the alias still points to (None when promoted)."""
    model_name: str | None
    version: str | None
    alias: str
    model_uri: str | None
    """models:/NAME@ALIAS, to load or `generate` from."""
    metric: str
    value: float
    """The best trial's metric (promoted or refused)."""
    baseline: str
    """The real-only baseline's value, as text."""
    trial_run_id: str
    search_run_id: str


@dataclass(frozen=True)
class GenerateResult:
    out: Path
    """The output folder, absolute."""
    files: list[Path] = field(repr=False)
    """Every image file written (one .npz for format npz), metadata.json not included."""
    metadata_path: Path
    counts: dict[str, int]
    """Class name -> images written."""
    metadata: dict = field(repr=False)


# --- search -----------------------------------------------------------------------------------

def resolve_space(space, overrides: dict | None = None, smoke_test: bool = False, data: str | None = None,
                  num_samples: int | None = None, max_concurrent: int | None = None):
    """The search space (a file path or a loaded Space) with the command line's changes applied."""
    from gantune.search.space import SMOKE_TEST, Space, SpaceError, load_space

    try:
        space = space if isinstance(space, Space) else load_space(space)
        overrides = dict(overrides or {})
        if smoke_test:
            # One baseline only, so a 2-trial smoke search still trains a GAN pipeline.
            first_baseline = list(space.search.baselines[:1])
            overrides = {**SMOKE_TEST, "search.num_samples": 2, "search.baselines": first_baseline, **overrides}
        if data:
            overrides["data.path"] = str(data)
        if num_samples is not None:
            overrides["search.num_samples"] = num_samples
        if max_concurrent is not None:
            overrides["search.max_concurrent"] = max_concurrent
        return space.with_overrides(overrides)
    except SpaceError as exc:
        raise UsageError(str(exc)) from exc


def search_options(space, **values):
    """SearchOptions from keyword values (None = the default): the experiment defaults to the
    space's name, the tracking URI to $MLFLOW_TRACKING_URI or ./mlflow.db, the address to the
    cluster of the Ray job gantune runs in."""
    from gantune.search.options import SearchOptions, default
    from gantune.search.space import name_error
    from gantune.search.tracking import default_tracking_uri

    unknown = set(values) - {f.name for f in fields(SearchOptions)}
    if unknown:
        raise TypeError(f"unknown search option(s): {sorted(unknown)}")
    experiment = values.get("experiment")
    if experiment is not None and (error := name_error(experiment, "--experiment")):
        raise UsageError(error)
    failures = values.get("max_failures")
    if failures is not None and failures < 0:  # Ray reads -1 as "retry forever"
        raise UsageError(f"--max-failures must be >= 0 (retries of a failed trial; 0 = none), got {failures}")
    resolved = {f.name: default(f.name) for f in fields(SearchOptions)}
    resolved.update({k: v for k, v in values.items() if v is not None})
    resolved.update(
        experiment=experiment or space.name,
        tracking_uri=values.get("tracking_uri") or default_tracking_uri(),
        optuna_storage=optuna_storage_uri(values.get("optuna_storage")),
        address=values.get("address") or job_cluster_address(),
    )
    return SearchOptions(**resolved)


def optuna_storage_uri(uri: str | None) -> str | None:
    """A bare postgresql:// URL with the PostgreSQL driver gantune installs (see the server's)."""
    if uri is None:
        return None
    from gantune.mlflow_server.server import ServerError, with_installed_postgres_driver

    try:
        return with_installed_postgres_driver(uri)
    except ServerError as exc:
        raise UsageError(f"--optuna-storage {exc}") from exc


def job_cluster_address() -> str | None:
    """'auto' when gantune is the entrypoint of `ray job submit` (the job supervisor sets
    RAY_JOB_CONFIG_JSON_ENV_VAR and RAY_ADDRESS for it): the search joins the job's cluster
    instead of starting a private one-node cluster inside the job."""
    return "auto" if "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ else None


def check_tracking(tracking_uri: str) -> None:
    """Fail before Ray starts when the tracking server does not answer."""
    from gantune.mlflow_server import TrackingUnreachableError, check_tracking_reachable

    try:
        check_tracking_reachable(tracking_uri)
    except TrackingUnreachableError as exc:
        raise UsageError(str(exc)) from exc


def search(space, *, data: str | None = None, overrides: dict | None = None, smoke_test: bool = False,
           num_samples: int | None = None, max_concurrent: int | None = None, skip_bad: bool = False,
           quiet: bool = True, **options) -> SearchResult:
    """Run a search: `space` is a space file (e.g. "spaces/demo.yaml") or a loaded Space;
    `overrides` fixes values as `--set` does ({"gan.steps": 100}); the other keywords are
    `gantune search`'s flags (experiment, tracking_uri, storage_path, seed, cpus_per_trial, ...).
    quiet (the default here): one line per finished trial instead of the live view.
    Raises tuner.SearchInterrupted on Ctrl-C and tuner.SearchFailed when the search stopped."""
    space = resolve_space(space, overrides, smoke_test, data, num_samples, max_concurrent)
    return run_search(space, search_options(space, quiet=quiet, **options), skip_bad)


def run_search(space, options, skip_bad: bool = False) -> SearchResult:
    """`search` for a resolved space and SearchOptions (the CLI prints them first)."""
    import time

    from gantune.search.dataset import load_data
    from gantune.search.resume import ResumeError
    from gantune.search.tuner import ClusterError
    from gantune.search.tuner import run_search as run_tuner
    from gantune.trainables.data.datasets import DatasetError

    check_tracking(options.tracking_uri)
    try:
        data, skipped = load_data(space, skip_bad)
    except DatasetError as exc:
        raise UsageError(str(exc)) from exc
    start = time.monotonic()
    try:
        rows, parent_run_id = run_tuner(space, data, options, skipped_files=skipped)
    except (ResumeError, ClusterError) as exc:
        raise UsageError(str(exc)) from exc
    return search_result(space, options, rows, parent_run_id, time.monotonic() - start)


def search_result(space, options, rows: list[dict], parent_run_id: str, seconds: float) -> SearchResult:
    import sys

    from mlflow.tracking import MlflowClient

    from gantune.search.mlflow_ui import APP_NAME
    from gantune.search.tracking import local_store_path, runs_page_url

    uri, metric = options.tracking_uri, space.search.metric
    experiment_id = MlflowClient(uri).get_run(parent_run_id).info.experiment_id
    best = rows[0] if rows else None
    command = None
    if local_store_path(uri) is not None:
        # --app-name gantune: the UI opens in model-training mode (search/mlflow_ui.py).
        mlflow_exe = Path(sys.executable).with_name("mlflow")
        command = f"{mlflow_exe} ui --app-name {APP_NAME} --backend-store-uri {uri} --port 5000"
    return SearchResult(
        experiment=options.experiment, experiment_id=experiment_id, parent_run_id=parent_run_id, tracking_uri=uri,
        metric=metric, best_trial_id=best["trial_id"] if best else None,
        best_config={k: best[k] for k in sorted(space.domains)} if best else {},
        best_value=best[metric] if best else float("nan"), leaderboard=rows,
        runs_url=runs_page_url("http://127.0.0.1:5000" if command else uri, experiment_id),
        ui_command=command, seconds=seconds,
    )


# --- after a search ---------------------------------------------------------------------------

def store(tracking_uri: str | None) -> str:
    """The tracking URI a reader uses, refused when it is a local store that does not exist (MLflow
    would create an empty one) or a server that does not answer."""
    from gantune.search.tracking import default_tracking_uri, missing_store

    uri = tracking_uri or default_tracking_uri()
    if reason := missing_store(uri):
        raise UsageError(reason)
    check_tracking(uri)
    return uri


def evaluate(experiment: str, *, tracking_uri: str | None = None, split: str = "test", seeds: int | None = None,
             data: str | None = None, dry_run: bool = False, train_fraction: tuple[float, ...] = (1.0,),
             gan_cache: str | None = None, trial: str | None = None, draws: int = 1, cpus: int | None = None,
             progress=None) -> EvaluateResult:
    """Refit the best configuration of the experiment's latest search and its baselines on the
    training pool and score each on the test split over paired seeds (`gantune evaluate`; seeds
    defaults to the command's)."""
    from gantune.search import evaluate as ev

    uri = store(tracking_uri)
    text, run_id = ev.evaluate(uri, experiment, split, ev.DEFAULT_SEEDS if seeds is None else seeds, data,
                               progress=progress or (lambda line: None), dry_run=dry_run,
                               fractions=tuple(train_fraction), gan_cache=gan_cache, trial=trial, draws=draws,
                               cpus=cpus)
    metrics = {} if run_id is None else dict(mlflow_client(uri).get_run(run_id).data.metrics)
    return EvaluateResult(experiment, run_id, method_table(metrics, ev.METHODS), metrics, text)


def method_table(metrics: dict[str, float], methods) -> dict[str, dict[str, tuple[float, float]]]:
    """test_<method>_<metric>_mean / _sd metrics as method -> metric -> (mean, sd)."""
    table: dict[str, dict[str, tuple[float, float]]] = {}
    for method in methods:
        prefix = f"test_{method}_"
        for key, mean in metrics.items():
            if key.startswith(prefix) and key.endswith("_mean"):
                name = key[len(prefix):-len("_mean")]
                table.setdefault(method, {})[name] = (mean, metrics.get(f"{prefix}{name}_sd", float("nan")))
    return table


def mlflow_client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri, registry_uri=uri)


def promote(experiment: str, *, tracking_uri: str | None = None, metric: str = "val_auc", mode: str | None = None,
            model_name: str | None = None, alias: str = "champion", force: bool = False,
            rank_by: str | None = None) -> PromoteResult:
    """Register the best complete trial's generator as <experiment>-generator@alias if it passes
    the promotion gate (`gantune promote`). A refusal is a result (promoted=False, refusal), not an error."""
    from gantune.search import promote as pm

    choice, version, refused = pm.choose_and_register(store(tracking_uri), experiment, metric, mode, model_name, alias,
                                                      force, rank_by)
    return PromoteResult(
        promoted=version is not None, forced=version is not None and not choice.allowed, why=choice.explain(),
        refusal=refused,
        model_name=version.name if version else None, version=str(version.version) if version else None,
        alias=alias, model_uri=f"models:/{version.name}@{alias}" if version else None, metric=choice.metric,
        value=choice.value, baseline=choice.baseline_text, trial_run_id=choice.best.info.run_id,
        search_run_id=choice.search.info.run_id,
    )


def generate(model_uri: str, num: int, out: str | Path, *, format: str = "png", seed: int = 0,
             tracking_uri: str | None = None, use_filter: bool = True, overwrite: bool = False) -> GenerateResult:
    """Write `num` synthetic images per class from a registered or logged generator into `out`
    (empty or missing; `overwrite` replaces an earlier generate output) with metadata.json."""
    from gantune.search import generate as gen

    metadata = gen.generate(model_uri, num, out, format, seed, store(tracking_uri), use_filter, overwrite=overwrite)
    out = Path(out).resolve()
    files = sorted(p for p in out.rglob("*") if p.is_file() and p.name != "metadata.json")
    return GenerateResult(out, files, out / "metadata.json", dict(metadata["counts"]), metadata)
