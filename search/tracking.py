"""MLflow writes of a search on the driver: the tracking URI, the experiment, the search's parent
run (resolved space, dataset summary, leaderboard artifacts, best-trial metrics) and each trial's
delta against the best baseline. Reads of a finished search are in search/runs.py, the Tune
callbacks that close trial runs in search/callbacks.py."""

from __future__ import annotations

import math
from pathlib import Path

from mlflow.tracking import MlflowClient

from .guards import DEFAULT_TRACKING_DB, default_tracking_uri  # noqa: F401 (re-exported: stdlib-only there)
from .leaderboard import gan_cache_totals
from gantune.trainables.paths import inside

DEFAULT_ARTIFACT_DIR = "mlartifacts"
FAILURE_TAG = "gantune.failure_reason"
"""Why a run ended FAILED (trial runs and search parent runs alike)."""
SMOKE_TAG = "gantune.smoke_test"
"""'true' on the parent run of a `gantune search --smoke-test` (budgets shrunk to minutes)."""


PER_FOLDER_HINT = (
    "the default store is mlflow.db in the folder gantune runs from: run it in your search's folder, "
    "or pass --tracking-uri (or set MLFLOW_TRACKING_URI) to your search's store"
)


def local_store_path(tracking_uri: str) -> Path | None:
    """The file (sqlite:///) or folder (file: URI or plain path) of a local store; None for a server."""
    if tracking_uri.startswith("sqlite:///"):
        return Path(tracking_uri.removeprefix("sqlite:///"))
    if tracking_uri.startswith("file:"):
        from urllib.parse import urlparse
        from urllib.request import url2pathname

        return Path(url2pathname(urlparse(tracking_uri).path))
    return None if "://" in tracking_uri else Path(tracking_uri)


def missing_store(tracking_uri: str) -> str | None:
    """Why a command that reads a finished search cannot use `tracking_uri` (a local store that does
    not exist: MLflow would create an empty one), or None. Checked before MLflow opens it."""
    path = local_store_path(tracking_uri)
    if path is None or path.exists():
        return None
    return f"no MLflow store at {tracking_uri} ({path} does not exist; nothing was created); {PER_FOLDER_HINT}"


def local_artifact_location(tracking_uri: str) -> str | None:
    """For a SQLite store, artifacts go next to the database file (absolute file URI); a tracking
    server decides for itself."""
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri.removeprefix("sqlite:///"))
        return (db.parent / DEFAULT_ARTIFACT_DIR).resolve().as_uri()
    return None


EXPERIMENT_KIND_TAG = ("mlflow.experimentKind", "custom_model_development")
"""A model-training experiment, not GenAI, for MLflow UIs that read the tag. 3.17's UI takes the
mode from the URL or the browser instead (search/mlflow_ui.py sets that default)."""


def ensure_experiment(client: MlflowClient, name: str, tracking_uri: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment.experiment_id)
        experiment_id = experiment.experiment_id
    else:
        location = local_artifact_location(tracking_uri)
        experiment_id = client.create_experiment(name, artifact_location=inside(location, name) if location else None)
    client.set_experiment_tag(experiment_id, *EXPERIMENT_KIND_TAG)  # existing experiments too
    return experiment_id


NESTING_ORDER = "attributes.start_time"
"""The only runs-table order in which MLflow's UI folds child runs under their parent (its bundle:
nest when there is no sort and no filter, or the sort is by start time)."""


def runs_view(resolved: dict) -> dict:
    """The runs table a person compares trials in: the metric and its worst fold, the searched
    parameters, the baseline tag; the newest search first with its trials folded beneath it (a
    click on the metric's header ranks them, listed flat). MLflow's shared-view JSON
    (selectedColumns holds column ids such as metrics.`val_auc`)."""
    from gantune.trainables.metrics import trial_metric_names

    metric = resolved["search"]["metric"]
    metrics = [metric] + ([f"{metric}_min_fold"] if f"{metric}_min_fold" in trial_metric_names() else [])
    columns = [f"metrics.`{m}`" for m in metrics] + [f"params.`{k}`" for k in resolved["searched"]]
    columns += ["tags.`gantune.baseline`", "attributes.`Duration`"]
    return {"selectedColumns": columns, "orderByKey": NESTING_ORDER, "orderByAsc": False}


def set_runs_view(client: MlflowClient, experiment_id: str, resolved: dict) -> None:
    """The experiment's `gantune` runs view (opened by runs_page_url and, in gantune's UI app, by
    a runs page opened without a view)."""
    import json

    from .mlflow_ui import VIEW_TAG

    client.set_experiment_tag(experiment_id, VIEW_TAG, json.dumps(runs_view(resolved)))


def runs_page_url(ui_url: str, experiment_id: str) -> str:
    """The experiment's runs page in model-training mode with the gantune view."""
    from .mlflow_ui import VIEW_KEY

    return (f"{ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs"
            f"?workflowType=machine_learning&viewStateShareKey={VIEW_KEY}")


def start_parent_run(client: MlflowClient, experiment_id: str, resolved: dict, run_name: str | None = None) -> str:
    tags = {"gantune.role": "search", "mlflow.runName": run_name or f"search-{resolved['name']}"}
    if resolved.get("smoke_test"):  # budgets shrunk to minutes: `gantune promote` refuses it unless forced
        tags[SMOKE_TAG] = "true"
    run = client.create_run(experiment_id, tags=tags)
    try:
        client.log_dict(run.info.run_id, resolved, "config/resolved_space.json")
        flat = {f"fixed.{k}": str(v) for k, v in resolved["fixed"].items()}
        flat.update({f"searched.{k}": str(v) for k, v in resolved["searched"].items()})
        flat.update({f"options.{k}": str(v) for k, v in resolved.get("options", {}).items()})  # SearchOptions
        for key, value in flat.items():
            client.log_param(run.info.run_id, key[:250], value[:6000])
    except Exception as exc:  # e.g. an unwritable artifact store: never leave the run RUNNING
        close_failed(client, run.info.run_id, failure_text(exc))
        raise
    return run.info.run_id


def failure_text(exc: BaseException) -> str:
    """An exception as one line for a tag or a message: its type and its first line, or, for an
    error that carries a traceback as its text (Tune's TuneError), the traceback's last line: the
    error that was raised."""
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    if lines and lines[0].startswith("Traceback (most recent call last)"):
        return f"{type(exc).__name__}: {lines[-1].strip()}"[:500]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:500]


def close_failed(client: MlflowClient, run_id: str, reason: str) -> None:
    """End `run_id` FAILED with `reason` as its gantune.failure_reason tag. Touches only the
    tracking database (no artifact), so it works when the artifact store is what failed."""
    client.set_tag(run_id, FAILURE_TAG, reason)
    client.set_terminated(run_id, status="FAILED")


def log_dataset(client: MlflowClient, run_id: str, data, skipped_files) -> None:
    """What the search was run on: class counts, the fixed test split's files, skipped files."""
    pool, test = data.pool, data.test
    summary = {
        "source": pool.source,
        "class_names": list(pool.class_names),
        "pool_class_counts": pool.class_counts(),
        "test_class_counts": test.class_counts(),
        "image_shape": list(pool.images.shape[1:]),
    }
    client.log_dict(run_id, summary, "data/summary.json")
    client.set_tag(run_id, "gantune.skipped_files", str(len(skipped_files)))
    if skipped_files:
        client.log_text(run_id, "\n".join(map(str, skipped_files)) + "\n", "data/skipped_files.txt")
    test_files = getattr(data, "test_files", ())
    if test_files:
        client.log_text(run_id, "\n".join(map(str, test_files)) + "\n", "data/test_split_files.txt")
    log_real_grids(client, run_id, pool)


REAL_GRIDS = "data/real"
"""Parent-run folder of the real-image grids, one per class (class_<label>_<name>.png), that a
report shows beside a trial's synthetic samples/ grids of the same name."""


def log_real_grids(client: MlflowClient, run_id: str, pool, seed: int = 0) -> None:
    """A grid of pool images per class (as many as a trial's sample grid), drawn with a fixed seed
    (never test images), laid out as the trials' sample grids are."""
    import tempfile

    import numpy as np

    from gantune.trainables.plots import save_grid
    from gantune.trainables.tracking import GRID_PER_CLASS

    rng = np.random.default_rng(seed)
    labels = pool.labels.numpy()
    with tempfile.TemporaryDirectory() as tmp:
        for label, name in enumerate(pool.class_names):
            indices = np.flatnonzero(labels == label)
            if not len(indices):
                continue
            chosen = np.sort(rng.choice(indices, size=min(GRID_PER_CLASS, len(indices)), replace=False))
            save_grid(pool.images[chosen], str(Path(tmp) / f"class_{label}_{name}.png"))
        client.log_artifacts(run_id, tmp, REAL_GRIDS)


def log_trial_deltas(
    client: MlflowClient, experiment_id: str, parent_run_id: str, rows: list[dict], metric: str
) -> None:
    """Each trial run also gets its delta against the better baseline, for sorting in the UI."""
    key = f"delta_{metric}_vs_best_baseline"
    # One query for every trial, not one each (the search's child runs are its trials).
    runs = client.search_runs([experiment_id], f"tags.`mlflow.parentRunId` = '{parent_run_id}'", max_results=10_000)
    run_ids = {run.data.tags.get("gantune.trial_id"): run.info.run_id for run in runs}
    for row in rows:
        if row["trial_id"] in run_ids and not math.isnan(row[key]):
            client.log_metric(run_ids[row["trial_id"]], key, row[key])


def finish_parent_run(
    client: MlflowClient, run_id: str, rows: list[dict], metric: str, table: str, status: str, reason: str = ""
) -> None:
    """Leaderboard artifacts, best-trial metrics and tags; then end the run with `status`
    (FINISHED, FAILED, or KILLED for a search interrupted with Ctrl-C). A FAILED search keeps
    `reason` as a tag; when the leaderboard cannot be written (the artifact store went away) the
    run still ends, FAILED, with that as its reason, and the error is raised afterwards."""
    try:
        log_leaderboard(client, run_id, rows, metric, table)
    except Exception as exc:
        close_failed(client, run_id, reason or f"cannot write the leaderboard: {failure_text(exc)}")
        raise
    if status == "FAILED":
        close_failed(client, run_id, reason or "the search stopped on an error")
    else:
        client.set_terminated(run_id, status=status)


def log_leaderboard(client: MlflowClient, run_id: str, rows: list[dict], metric: str, table: str) -> None:
    import csv
    import io

    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    client.log_text(run_id, buffer.getvalue(), "leaderboard.csv")
    client.log_text(run_id, table + "\n", "leaderboard.txt")
    for key, total in gan_cache_totals(rows).items():
        client.log_metric(run_id, key, total)
    best = next((r for r in rows if not math.isnan(r[metric])), None)
    if best:
        client.log_metric(run_id, f"best_{metric}", best[metric])
        client.set_tag(run_id, "gantune.best_trial_id", best["trial_id"])
        for key, value in best.items():
            if key.startswith(f"delta_{metric}_vs_") and not math.isnan(value):
                client.log_metric(run_id, f"best_{key}", value)
