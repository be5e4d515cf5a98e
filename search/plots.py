"""Figures a search logs on its parent run when it ends: the Pareto front of a multi-objective
search, and the synthetic-ratio-vs-metric plot (drawn by search/report.py, the one place that
plot lives)."""

from __future__ import annotations

import csv
import io
import math
import tempfile
from pathlib import Path

import numpy as np


def pareto_mask(values: np.ndarray, modes: list[str] | tuple[str, ...]) -> np.ndarray:
    """values (N, M), one column per objective -> (N,) True where no other row is at least as
    good in every objective and better in one. Rows with a nan are never on the front."""
    values = np.asarray(values, dtype=float)
    signs = np.array([1.0 if m == "max" else -1.0 for m in modes])
    gains = values * signs  # every objective as "higher is better"
    finite = np.isfinite(gains).all(axis=1)
    front = finite.copy()
    for i in np.flatnonzero(finite):
        others = gains[finite]
        dominated = ((others >= gains[i]).all(axis=1) & (others > gains[i]).any(axis=1)).any()
        front[i] = not dominated
    return front


def pareto_rows(rows: list[dict], objectives: list[str], modes: list[str]) -> list[dict]:
    """The leaderboard rows on the Pareto front, in leaderboard order."""
    values = np.array([[row.get(o, math.nan) for o in objectives] for row in rows], dtype=float).reshape(len(rows), len(objectives))
    return [row for row, keep in zip(rows, pareto_mask(values, modes)) if keep]


def rows_csv(rows: list[dict], columns: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def save_pareto_plot(rows: list[dict], front: list[dict], objectives: list[str], modes: list[str], path: Path) -> None:
    """The first two objectives: every trial, the front highlighted and joined as a staircase."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x_key, y_key = objectives[:2]
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    finite = [r for r in rows if math.isfinite(r.get(x_key, math.nan)) and math.isfinite(r.get(y_key, math.nan))]
    ax.scatter([r[x_key] for r in finite], [r[y_key] for r in finite], s=30, color="0.6", label="trials", zorder=2)
    best_first = sorted(front, key=lambda r: r[x_key], reverse=modes[0] == "max")
    ax.plot([r[x_key] for r in best_first], [r[y_key] for r in best_first], "-o", color="tab:red",
            drawstyle="steps-post", label="Pareto front", zorder=3)
    for r in finite:
        if r.get("baseline"):
            ax.annotate(r["baseline"], (r[x_key], r[y_key]), textcoords="offset points", xytext=(4, -10), fontsize=7)
    for r in front:
        ax.annotate(r["trial_id"], (r[x_key], r[y_key]), textcoords="offset points", xytext=(4, 4), fontsize=7)
    extra = f" (of {len(objectives)} objectives: {', '.join(objectives[2:])} not drawn)" if len(objectives) > 2 else ""
    ax.set_xlabel(f"{x_key} ({modes[0]})")
    ax.set_ylabel(f"{y_key} ({modes[1]})")
    ax.set_title(f"Pareto front{extra}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def log_pareto_front(client, run_id: str, rows: list[dict], objectives: list[str], modes: list[str], columns: list[str]) -> list[dict]:
    """pareto.csv (the front's leaderboard rows) and plots/pareto_front.png on the parent run."""
    front = pareto_rows(rows, objectives, modes)
    client.log_text(run_id, rows_csv(front, columns), "pareto.csv")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pareto_front.png"
        save_pareto_plot(rows, front, objectives, modes, path)
        client.log_artifact(run_id, str(path), "plots")
    client.set_tag(run_id, "gantune.pareto_trial_ids", ",".join(r["trial_id"] for r in front)[:5000])
    return front


def log_ratio_plot(client, experiment: str, run_id: str) -> str | None:
    """report.ratio_plot on the finished search `run_id`; returns why it was not drawn, or None.
    (report.load_search reads the experiment's latest finished search: this one, unless another
    search of the same experiment ended in the meantime.)"""
    import os

    from .report import ReportError, leaderboard, load_search, ratio_plot

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no download bars in the search's output
    try:
        view = load_search(client, experiment)
    except ReportError as exc:
        return str(exc)
    if view.search.info.run_id != run_id:
        return f"another search of '{experiment}' ended meanwhile; run `gantune report --experiment {experiment}`"
    with tempfile.TemporaryDirectory() as tmp:
        path = ratio_plot(view, leaderboard(view), Path(tmp))
        client.log_artifact(run_id, str(path), "plots")
    return None


def log_search_plots(client, space, experiment: str, run_id: str, rows: list[dict], columns: list[str]) -> list[str]:
    """The end-of-search figures on the finished parent run; returns notes on figures not drawn.
    A figure that fails must not cost a finished search its summary, so errors become notes."""
    settings, notes = space.search, []
    if settings.multi_objective:
        try:
            log_pareto_front(client, run_id, rows, list(settings.objectives), list(settings.objective_modes), columns)
        except Exception as exc:  # noqa: BLE001 - reported; the search itself succeeded
            notes.append(f"Pareto front not logged: {type(exc).__name__}: {exc}")
    try:
        note = log_ratio_plot(client, experiment, run_id)
    except Exception as exc:  # noqa: BLE001
        note = f"{type(exc).__name__}: {exc}"
    if note:
        notes.append(f"ratio plot not drawn: {note}")
    return notes
