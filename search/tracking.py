"""The driver side's one MLflow home: experiment, the search's parent run, closing trial runs
that a scheduler stopped or an error killed, and the leaderboard."""

from __future__ import annotations

import math
import os
from pathlib import Path

from mlflow.tracking import MlflowClient
from ray.tune import Callback

from gantune.trainables.config import TrialConfig
from gantune.trainables.metrics import METRIC_NAMES
from gantune.trainables.tracking import find_trial_run

DEFAULT_TRACKING_DB = "mlflow.db"
DEFAULT_ARTIFACT_DIR = "mlartifacts"


def default_tracking_uri(workdir: str | os.PathLike = ".") -> str:
    """MLFLOW_TRACKING_URI, else a SQLite file in the working directory (absolute: Ray workers
    run in other directories)."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{Path(workdir).resolve() / DEFAULT_TRACKING_DB}"


def local_artifact_location(tracking_uri: str) -> str | None:
    """For a SQLite store, artifacts go next to the database file (absolute file URI); a tracking
    server decides for itself."""
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri.removeprefix("sqlite:///"))
        return (db.parent / DEFAULT_ARTIFACT_DIR).resolve().as_uri()
    return None


def ensure_experiment(client: MlflowClient, name: str, tracking_uri: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment.experiment_id)
        return experiment.experiment_id
    location = local_artifact_location(tracking_uri)
    return client.create_experiment(name, artifact_location=f"{location}/{name}" if location else None)


def start_parent_run(client: MlflowClient, experiment_id: str, resolved: dict, run_name: str | None = None) -> str:
    run = client.create_run(
        experiment_id,
        tags={"gantune.role": "search", "mlflow.runName": run_name or f"search-{resolved['name']}"},
    )
    client.log_dict(run.info.run_id, resolved, "config/resolved_space.json")
    flat = {f"fixed.{k}": str(v) for k, v in resolved["fixed"].items()}
    flat.update({f"searched.{k}": str(v) for k, v in resolved["searched"].items()})
    for key, value in flat.items():
        client.log_param(run.info.run_id, key[:250], value[:6000])
    return run.info.run_id


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


def trial_outcome(metrics: dict) -> str:
    """DIVERGED / OOM for a trial that reported its failure (worst metric value) instead of raising."""
    return "DIVERGED" if metrics.get("diverged") else "OOM" if metrics.get("oom") else "OK"


def fold_spread(metric: str) -> bool:
    """Whether trials report the metric's worst fold (the classification metrics do)."""
    return metric in {f"val_{m}" for m in METRIC_NAMES}


def trial_status(errored: bool, metrics: dict, total_folds: int) -> str:
    """ERROR / DIVERGED / OOM; STOPPED for a trial the scheduler ended after fewer folds; else OK."""
    if errored:
        return "ERROR"
    outcome = trial_outcome(metrics)
    return "STOPPED" if outcome == "OK" and metrics.get("folds_done", 0) < total_folds else outcome


def leaderboard_rows(result_grid, space) -> list[dict]:
    """One row per trial, best first, with its delta against each baseline of the search and
    against the better of them."""
    metric, mode = space.search.metric, space.search.mode
    total_folds = TrialConfig.from_flat(space.fixed).data.total_folds
    rows = []
    for result in result_grid:
        m = result.metrics or {}
        value = m.get(metric)
        rows.append({
            "trial_id": m.get("trial_id", ""),
            metric: float(value) if value is not None else float("nan"),
            **({f"{metric}_min_fold": float(m.get(f"{metric}_min_fold", float("nan")))} if fold_spread(metric) else {}),
            **{k: float(m.get(k, float("nan"))) for k in space.search.objectives[1:]},  # multi-objective
            "baseline": space.baseline_of(result.config) or "",
            "folds_done": m.get("folds_done", 0),
            "status": trial_status(bool(result.error), m, total_folds),
            **{k: result.config.get(k) for k in sorted(space.domains)},
        })
    better = max if mode == "max" else min
    baselines = {}
    for name in space.search.baselines:
        values = [r[metric] for r in rows if r["baseline"] == name and not math.isnan(r[metric])]
        baselines[name] = better(values) if values else float("nan")
    known = [v for v in baselines.values() if not math.isnan(v)]
    best_baseline = better(known) if known else float("nan")
    for row in rows:
        for name, value in baselines.items():
            row[f"delta_{metric}_vs_{name}"] = row[metric] - value
        row[f"delta_{metric}_vs_best_baseline"] = row[metric] - best_baseline
    sign = -1 if mode == "max" else 1
    return sorted(rows, key=lambda r: (math.isnan(r[metric]), sign * (0 if math.isnan(r[metric]) else r[metric])))


def log_trial_deltas(client: MlflowClient, experiment_id: str, parent_run_id: str, rows: list[dict], metric: str) -> None:
    """Each trial run also gets its delta against the better baseline, for sorting in the UI."""
    key = f"delta_{metric}_vs_best_baseline"
    for row in rows:
        run = find_trial_run(client, experiment_id, parent_run_id, row["trial_id"])
        if run is not None and not math.isnan(row[key]):
            client.log_metric(run.info.run_id, key, row[key])


def format_table(rows: list[dict], columns: list[str]) -> str:
    def cell(v) -> str:
        if isinstance(v, float):
            return "nan" if math.isnan(v) else f"{v:.4g}"
        return str(v)

    body = [[cell(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(b[i]) for b in body)) if body else len(c) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(b, widths)) for b in body]
    return "\n".join(lines)


def finish_parent_run(client: MlflowClient, run_id: str, rows: list[dict], metric: str, table: str, status: str) -> None:
    """Leaderboard artifacts, best-trial metrics and tags; then end the run with `status`
    (FINISHED, FAILED, or KILLED for a search interrupted with Ctrl-C)."""
    import csv
    import io

    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    client.log_text(run_id, buffer.getvalue(), "leaderboard.csv")
    client.log_text(run_id, table + "\n", "leaderboard.txt")
    best = next((r for r in rows if not math.isnan(r[metric])), None)
    if best:
        client.log_metric(run_id, f"best_{metric}", best[metric])
        client.set_tag(run_id, "gantune.best_trial_id", best["trial_id"])
        for key, value in best.items():
            if key.startswith(f"delta_{metric}_vs_") and not math.isnan(value):
                client.log_metric(run_id, f"best_{key}", value)
    client.set_terminated(run_id, status=status)
