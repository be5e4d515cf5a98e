"""`gantune report`: the leaderboard, plots and a one-page HTML summary of an experiment's latest
search, logged on the search's parent run.

The search's own record is the source: the parent run's `config/resolved_space.json` gives the
space (so the domains Optuna sampled from), the trial runs give params and metrics. An in-memory
Optuna study is rebuilt from them so Optuna's own plots (optimisation history, hyperparameter
importances, parallel coordinates) draw the search as Optuna saw it."""

from __future__ import annotations

import argparse
import base64
import html
import math
import shutil
import tempfile
import warnings
from datetime import datetime, timezone
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # a report is written without a display
import matplotlib.pyplot as plt
import optuna

from .leaderboard import (
    TrialResult,
    format_table,
    leaderboard_columns,
    leaderboard_rows,
    outcome_counts,
    run_usable,
    table_cells,
)
from .plots import ratio_plot, save_axes
from .runs import SearchView, load_search

HTML_NAME = "report.html"


class ReportError(ValueError):
    """No such experiment, no finished search, or a search without its resolved space."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--experiment", required=True, help="MLflow experiment whose latest finished search to report")
    p.add_argument("--top", type=int, default=10, help="trials shown in the leaderboard (default: 10)")
    p.add_argument("--output", help="also keep a copy of the plots and report.html in this folder")


def leaderboard(view: SearchView) -> list[dict]:
    """Rows best first, with the columns and deltas of the search's own closing leaderboard."""
    results = [
        TrialResult(
            metrics={**run.data.metrics, "trial_id": trial_id},
            config=view.params[trial_id],
            error=run.info.status == "FAILED",
        )
        for trial_id, run in view.trials.items()
    ]
    return leaderboard_rows(results, view.space)


def finite_value(run, metric: str) -> float | None:
    """The trial's metric if the trial counts (leaderboard.usable), else None."""
    return run.data.metrics[metric] if run_usable(run, metric) else None


def optuna_study(view: SearchView) -> optuna.Study:
    """The search rebuilt as an in-memory Optuna study, trials in the order they started."""
    study = optuna.create_study(direction="maximize" if view.space.search.mode == "max" else "minimize")
    distributions = view.space.optuna_space()
    for trial_id, run in view.trials.items():
        value = finite_value(run, view.metric)
        params = view.params[trial_id]
        study.add_trial(optuna.trial.create_trial(
            state=optuna.trial.TrialState.COMPLETE if value is not None else optuna.trial.TrialState.FAIL,
            value=value, params=params, distributions={k: distributions[k] for k in params},
            user_attrs={"trial_id": trial_id},
        ))
    return study


# --- plots ----------------------------------------------------------------------------------


OPTUNA_PLOTS = {
    "optimization_history": ("plot_optimization_history", (7, 4.5)),
    "param_importances": ("plot_param_importances", (7, 4.5)),
    "parallel_coordinate": ("plot_parallel_coordinate", (9, 5)),
}
"""File stem -> (optuna.visualization.matplotlib function, figure size in inches)."""


def optuna_plots(study: optuna.Study, metric: str, out: Path) -> tuple[list[Path], list[str]]:
    """(written pngs, notes on plots that could not be drawn, e.g. too few finished trials)."""
    from optuna.visualization import matplotlib as vis

    written, notes = [], []
    for stem, (name, size) in OPTUNA_PLOTS.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            warnings.simplefilter(
                "ignore", UserWarning
            )  # matplotlib, on an axis with one value (a choice never varied)
            try:
                ax = getattr(vis, name)(study, target_name=metric)
            except (ValueError, RuntimeError) as exc:  # e.g. importances need two finished trials
                notes.append(f"{stem}: not drawn ({exc})")
                plt.close("all")
                continue
        path = out / f"{stem}.png"
        save_axes(ax, path, size)
        written.append(path)
    return written, notes


# --- HTML -----------------------------------------------------------------------------------


def embedded_img(path: Path, alt: str, width: int | None = None) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    size = f' width="{width}"' if width else ""
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"{size}>'


def figure(path: Path, width: int | None = None) -> str:
    """An embedded PNG captioned with its file name: the one place file names become HTML.
    Names come from runs (class names, the metric in a plot's name), so they are escaped."""
    return f"<figure>{embedded_img(path, path.stem, width)}<figcaption>{html.escape(path.stem)}</figcaption></figure>"


def html_table(rows: list[dict], columns: list[str]) -> str:
    # The same cells as the terminal table (leaderboard.table_cells).
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in table_cells(rows, columns)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def trial_images(client, run_id: str, folder: str, out: Path) -> list[Path]:
    names = [a.path for a in client.list_artifacts(run_id, folder) if a.path.endswith(".png")]
    return [Path(client.download_artifacts(run_id, name, str(out))) for name in names]


def samples_section(client, view: SearchView, rows: list[dict], out: Path) -> str:
    """Sample grids (and ROC curve) of the best trial that made synthetic images."""
    for rank, row in enumerate(rows):
        run = view.trials[row["trial_id"]]
        if finite_value(run, view.metric) is None:
            continue
        grids = trial_images(client, run.info.run_id, "samples", out / row["trial_id"])
        if not grids:
            continue
        note = (
            "the best trial"
            if rank == 0
            else f"the best trial with synthetic images (rank {rank + 1}; the best is a baseline)"
        )
        figures = "".join(figure(p) for p in grids)
        roc = trial_images(client, run.info.run_id, "plots", out / row["trial_id"])
        plots = "".join(figure(p, 360) for p in roc)
        return (
            f"<h2>Samples of trial {html.escape(row['trial_id'])}</h2>"
            f"<p>{note}: {html.escape(view.metric)} = {row[view.metric]:.4g}, run {html.escape(run.info.run_id)}. "
            "Grids use the same latent seed in every trial, so they compare across trials.</p>"
            f'<div class="row">{figures}</div><div class="row">{plots}</div>'
        )
    return "<h2>Samples</h2><p>No finished trial logged sample grids (every trial was a baseline or failed).</p>"


HTML_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;font-size:13px}th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f0f0f0}tr:first-child td{font-weight:bold}.row{display:flex;flex-wrap:wrap;gap:12px}
figure{margin:0}figcaption{font-size:12px;color:#555;text-align:center}.note{color:#a40}
img{max-width:100%;image-rendering:pixelated}
"""


def write_html(
    path: Path, view: SearchView, title_lines: list[str], table: str, plots: list[Path], notes: list[str], samples: str
) -> None:
    images = "".join(figure(p) for p in plots)
    notes_html = "".join(f'<p class="note">{html.escape(n)}</p>' for n in notes)
    head = "".join(f"<p>{html.escape(line)}</p>" for line in title_lines)
    path.write_text(
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>gantune report: {html.escape(view.experiment)}</title>"
        f"<style>{HTML_STYLE}</style></head><body><h1>gantune report: {html.escape(view.experiment)}</h1>{head}"
        f"<h2>Leaderboard</h2>{table}<h2>Plots</h2>{notes_html}<div class='row'>{images}</div>{samples}</body></html>"
    )


# --- the command ----------------------------------------------------------------------------


def summary_lines(view: SearchView, rows: list[dict]) -> list[str]:
    search = view.search
    started = datetime.fromtimestamp(search.info.start_time / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    counts = outcome_counts([r["outcome"] for r in rows])
    lines = [
        f"Experiment '{view.experiment}', search run {search.info.run_id} "
        f"({search.data.tags.get('mlflow.runName', '')}, started {started})",
        f"{len(rows)} trials ({counts or 'none'}); ranked by {view.metric} ({view.space.search.mode}), "
        "the mean over the folds each trial ran",
    ]
    for name in view.space.search.baselines:
        base = [r for r in rows if r["baseline"] == name and math.isfinite(r[view.metric])]
        text = f"{base[0][view.metric]:.4g} (trial {base[0]['trial_id']})" if base else "no finished trial"
        lines.append(f"{name} baseline {view.metric}: {text}")
    return lines


def build_report(client, experiment: str, top: int, out: Path) -> tuple[SearchView, list[dict], list[str], list[Path]]:
    """Read the search, draw the plots and the HTML into `out`; returns (view, rows, summary lines, files)."""
    view = load_search(client, experiment, ReportError)
    rows = leaderboard(view)
    plots_dir = out / "plots"
    plots_dir.mkdir(parents=True, exist_ok=True)
    plots, notes = optuna_plots(optuna_study(view), view.metric, plots_dir)
    plots.append(ratio_plot(rows, view.space, plots_dir))
    columns = leaderboard_columns(view.space)
    lines = summary_lines(view, rows)
    with tempfile.TemporaryDirectory() as tmp:
        samples = samples_section(client, view, rows, Path(tmp))
        write_html(out / HTML_NAME, view, lines, html_table(rows, columns), plots, notes, samples)
    table = format_table(rows[:top], columns)
    lines += [f"\nTop {min(top, len(rows))} of {len(rows)} trials:", table, *notes]
    return view, rows, lines, [*plots, out / HTML_NAME]


def report(tracking_uri: str, experiment: str, top: int = 10, output: str | None = None) -> tuple[str, list[str]]:
    """Print-ready text and the artifact paths logged on the search's parent run."""
    from mlflow.tracking import MlflowClient

    if top < 1:
        raise ReportError(f"--top must be >= 1, got {top}")
    client = MlflowClient(tracking_uri)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        view, _, lines, files = build_report(client, experiment, top, out)
        run_id = view.search.info.run_id
        client.log_artifacts(run_id, str(out / "plots"), "plots")
        client.log_artifact(run_id, str(out / HTML_NAME))
        if output:
            for path in files:
                target = Path(output) / path.relative_to(out)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, target)
    logged = [f"plots/{p.name}" if p.parent.name == "plots" else p.name for p in files]
    lines.append(f"\nLogged on search run {run_id}: {', '.join(logged)}")
    if output:
        lines.append(f"Copies in {output}/ (open {Path(output) / HTML_NAME} in a browser)")
    return "\n".join(lines), logged


def report_main(args) -> int:
    import os

    # A terminal report, not a download log: no per-file progress bars, no study-created line.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    text, _ = report(args.tracking_uri, args.experiment, args.top, args.output)
    print(text)
    return 0
