"""Figures of a search, drawn from its leaderboard rows and its space (never re-read from MLflow):
the Pareto front of a multi-objective search and the synthetic-ratio-vs-metric plot. The search
logs both on its parent run when it ends; `gantune report` draws the ratio plot again."""

from __future__ import annotations

import csv
import io
import math
import tempfile
from pathlib import Path

import numpy as np

from gantune.trainables import outcome

from .leaderboard import row_usable

PLOT_DPI = 110


def pyplot():
    """matplotlib.pyplot on the Agg backend (figures are written without a display); imported on
    first use, so the search driver pays for matplotlib only when it draws."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_axes(ax, path: Path, size: tuple[float, float]) -> None:
    plt = pyplot()
    fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
    fig.set_size_inches(*size)
    fig.tight_layout()
    fig.savefig(path, dpi=PLOT_DPI)
    plt.close(fig)


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
    values = np.array([[row.get(o, math.nan) for o in objectives] for row in rows], dtype=float).reshape(
        len(rows), len(objectives)
    )
    return [row for row, keep in zip(rows, pareto_mask(values, modes)) if keep]


def rows_csv(rows: list[dict], columns: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def save_pareto_plot(rows: list[dict], front: list[dict], objectives: list[str], modes: list[str], path: Path) -> None:
    """The first two objectives: every trial, the front highlighted and joined as a staircase."""
    plt = pyplot()
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


def log_pareto_front(
    client, run_id: str, rows: list[dict], objectives: list[str], modes: list[str], columns: list[str]
) -> list[dict]:
    """pareto.csv (the front's leaderboard rows) and plots/pareto_front.png on the parent run."""
    front = pareto_rows(rows, objectives, modes)
    client.log_text(run_id, rows_csv(front, columns), "pareto.csv")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pareto_front.png"
        save_pareto_plot(rows, front, objectives, modes, path)
        client.log_artifact(run_id, str(path), "plots")
    client.set_tag(run_id, "gantune.pareto_trial_ids", ",".join(r["trial_id"] for r in front)[:5000])
    return front


def trial_ratio(row: dict, space) -> float:
    """The synthetic-to-real ratio a leaderboard row's trial ran with."""
    from gantune.trainables.config import TrialConfig

    return TrialConfig.from_flat(
        {**space.fixed, **{k: row[k] for k in space.domains if row.get(k) is not None}}
    ).synth.ratio


def ratio_plot(rows: list[dict], space, out: Path) -> Path:
    """Synthetic-to-real ratio against the metric, one point per usable trial; baselines marked,
    the real-only baseline's value drawn across as the line to beat."""
    plt = pyplot()
    metric = space.search.metric
    fig, ax = plt.subplots(figsize=(7, 4.5))
    points = [(r, trial_ratio(r, space)) for r in rows if row_usable(r, metric)]
    gan = [(r, x) for r, x in points if not r["baseline"] and r["outcome"] == outcome.FINISHED]
    stopped = [(r, x) for r, x in points if not r["baseline"] and r["outcome"] != outcome.FINISHED]
    if gan:
        ax.scatter([x for _, x in gan], [r[metric] for r, _ in gan], s=40, color="tab:blue",
                   label="GAN-augmented trials, complete", zorder=3)
    if stopped:  # hollow: a mean over fewer folds, not comparable with the complete trials'
        ax.scatter([x for _, x in stopped], [r[metric] for r, _ in stopped], s=40, facecolors="none",
                   edgecolors="0.45", label="stopped early (mean of the folds run)", zorder=3)
    for name, marker, color in (("real_only", "*", "tab:red"), ("classic_aug", "D", "tab:green")):
        base = [(r, x) for r, x in points if r["baseline"] == name]
        if not base:
            continue
        ax.scatter([x for _, x in base], [r[metric] for r, _ in base], s=160 if marker == "*" else 60, marker=marker,
                   color=color, label=f"{name} baseline", zorder=4)
        best = max(r[metric] for r, _ in base) if space.search.mode == "max" else min(r[metric] for r, _ in base)
        ax.axhline(best, color=color, ls="--", lw=1, label=f"{name}: {best:.3f}")
    for r, x in points:
        ax.annotate(r["trial_id"], (x, r[metric]), textcoords="offset points", xytext=(4, 4), fontsize=7, color="0.3")
    ax.set_xlabel("synth.ratio (synthetic images per real image)")
    ax.set_ylabel(f"{metric} (mean over folds)")
    ax.set_title(f"Synthetic-to-real ratio vs {metric}")
    ax.grid(alpha=0.3)
    if points:
        ax.legend(fontsize=8, loc="best")
    path = out / f"ratio_vs_{metric.removeprefix('val_')}.png"
    save_axes(ax, path, (7, 4.5))
    return path


def log_ratio_plot(client, run_id: str, rows: list[dict], space) -> None:
    """ratio_plot of the finished search's own rows, logged under plots/ on its parent run."""
    with tempfile.TemporaryDirectory() as tmp:
        path = ratio_plot(rows, space, Path(tmp))
        client.log_artifact(run_id, str(path), "plots")


def log_search_plots(client, space, run_id: str, rows: list[dict], columns: list[str]) -> list[str]:
    """The end-of-search figures on the finished parent run; returns notes on figures not drawn.
    A figure that fails must not cost a finished search its summary, so errors become notes."""
    settings, notes = space.search, []
    if settings.multi_objective:
        try:
            log_pareto_front(client, run_id, rows, list(settings.objectives), list(settings.objective_modes), columns)
        except Exception as exc:  # noqa: BLE001 - reported; the search itself succeeded
            notes.append(f"Pareto front not logged: {type(exc).__name__}: {exc}")
    try:
        log_ratio_plot(client, run_id, rows, space)
    except Exception as exc:  # noqa: BLE001
        notes.append(f"ratio plot not drawn: {type(exc).__name__}: {exc}")
    return notes
