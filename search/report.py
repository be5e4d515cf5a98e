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
import json
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
    fixed_folds,
    format_table,
    leaderboard_columns,
    leaderboard_rows,
    outcome_counts,
    run_usable,
    table_cells,
    trial_outcome,
)
from gantune.trainables import outcome

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


def trial_outcomes(view: SearchView) -> dict[str, str]:
    """trial id -> how it ended (trainables/outcome.py: finished = every fold ran, stopped early, ...)."""
    total = fixed_folds(view.space.fixed)[0]
    return {t: trial_outcome(run.info.status == "FAILED", run.data.metrics, total) for t, run in view.trials.items()}


def optuna_study(view: SearchView) -> optuna.Study:
    """The search rebuilt as an in-memory Optuna study, trials in the order they started. A trial
    the scheduler stopped is PRUNED, its mean over the folds it ran an intermediate value at that
    fold, so Optuna's plots and importances take only complete trials."""
    study = optuna.create_study(direction="maximize" if view.space.search.mode == "max" else "minimize")
    distributions = view.space.optuna_space()
    outcomes = trial_outcomes(view)
    State = optuna.trial.TrialState
    for trial_id, run in view.trials.items():
        value = finite_value(run, view.metric)
        params = view.params[trial_id]
        stopped = value is not None and outcomes[trial_id] == outcome.STOPPED
        study.add_trial(optuna.trial.create_trial(
            state=State.PRUNED if stopped else State.COMPLETE if value is not None else State.FAIL,
            value=None if stopped else value, params=params, distributions={k: distributions[k] for k in params},
            intermediate_values={int(run.data.metrics.get("folds_done", 1)): value} if stopped else None,
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


IMPORTANCE_MIN_TRIALS = 20
"""Below this many complete trials a report says that the importances are a hint, not a finding."""


def optuna_plots(study: optuna.Study, metric: str, out: Path) -> tuple[list[Path], list[str], dict[str, str]]:
    """(written pngs, notes on plots that could not be drawn, e.g. too few finished trials, the
    caveat to print under a plot: file stem -> text)."""
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
        if stem == "parallel_coordinate":
            readable_lines(ax)
        path = out / f"{stem}.png"
        save_axes(ax, path, size)
        written.append(path)
    return written, notes, plot_caveats(study)


def readable_lines(ax) -> None:
    """Optuna draws parallel coordinates in 'Blues' on a grey background, where the low scores'
    near-white lines vanish: a colour map that is dark at both ends, on white."""
    from matplotlib.collections import LineCollection

    ax.set_facecolor("white")
    for collection in ax.collections:
        if isinstance(collection, LineCollection):
            collection.set_cmap("viridis")
            collection.set_linewidth(1.8)
    for image in ax.figure.axes[1:]:  # the colour bar follows its mappable
        image.set_facecolor("white")


def plot_caveats(study: optuna.Study) -> dict[str, str]:
    complete = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
    if complete >= IMPORTANCE_MIN_TRIALS:
        return {}
    return {"param_importances": (
        f"Hyperparameter importances computed from only {complete} complete trial{'s' if complete != 1 else ''} "
        f"(a random forest fitted to them, fANOVA): with fewer than {IMPORTANCE_MIN_TRIALS} the ranking changes "
        "with each added trial. Read it as a hint where to look, not as a finding."
    )}


# --- HTML -----------------------------------------------------------------------------------


def embedded_img(path: Path, alt: str, width: int | None = None) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    size = f' width="{width}"' if width else ""
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"{size}>'


def figure(path: Path, width: int | None = None, caption: str | None = None) -> str:
    """An embedded PNG captioned with its file name (or `caption`): the one place file names
    become HTML. Names come from runs (class names, the metric in a plot's name), so they are escaped."""
    text = html.escape(caption if caption is not None else path.stem)
    return f"<figure>{embedded_img(path, path.stem, width)}<figcaption>{text}</figcaption></figure>"


def html_table(rows: list[dict], columns: list[str], first_bold: bool = False) -> str:
    # The same cells as the terminal table (leaderboard.table_cells).
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in table_cells(rows, columns)
    )
    css = ' class="best"' if first_bold else ""
    return f'<div class="wide"><table{css}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


REPORT_METRICS = ("val_sensitivity", "val_specificity")
"""Shown next to the ranking metric in report.html's tables (mean over the folds a trial ran)."""


def report_columns(view: SearchView) -> list[str]:
    """The leaderboard's columns with sensitivity and specificity after the metric's worst fold."""
    columns = leaderboard_columns(view.space)
    at = columns.index(view.metric) + 1 + (f"{view.metric}_min_fold" in columns)
    extra = [m for m in REPORT_METRICS if m not in columns]
    return ["rank", *columns[:at], *extra, *columns[at:]]


def with_report_metrics(view: SearchView, rows: list[dict]) -> list[dict]:
    """Rows with the REPORT_METRICS of their runs and a rank among the complete trials ('' for the rest)."""
    out, rank = [], 0
    for row in rows:
        metrics = view.trials[row["trial_id"]].data.metrics
        complete = row["outcome"] == outcome.FINISHED and math.isfinite(row[view.metric])
        rank += complete
        out.append({**row, **{m: float(metrics.get(m, math.nan)) for m in REPORT_METRICS},
                    "rank": str(rank) if complete else ""})
    return out


def leaderboard_section(view: SearchView, rows: list[dict]) -> str:
    """Complete trials ranked; trials the scheduler stopped early and failed ones below, unranked."""
    columns = report_columns(view)
    rows = with_report_metrics(view, rows)
    complete = [r for r in rows if r["rank"]]
    stopped = [r for r in rows if not r["rank"] and r["outcome"] == outcome.STOPPED]
    failed = [r for r in rows if not r["rank"] and r["outcome"] != outcome.STOPPED]
    total = fixed_folds(view.space.fixed)[0]
    parts = [f"<h2>Leaderboard: complete trials ({len(complete)}), ranked</h2>",
             f"<p>Each ran all {total} folds; ranked by {html.escape(view.metric)}, the mean over its folds.</p>",
             html_table(complete, columns, first_bold=True) if complete else "<p>No trial ran every fold.</p>"]
    if stopped:
        parts += [f"<h2>Stopped early by the scheduler ({len(stopped)}), not ranked</h2>",
                  "<p>ASHA ended these after fewer folds than the others: their value is the mean of the folds "
                  "they ran (folds_done), so it does not compare with a complete trial's and they are left out of "
                  "the ranking, the Optuna plots and the importances.</p>", html_table(stopped, columns)]
    if failed:
        parts += [f"<h2>Failed, diverged, out of memory or rejected ({len(failed)}), not ranked</h2>",
                  html_table(failed, columns)]
    return "".join(parts)


def trial_images(client, run_id: str, folder: str, out: Path) -> list[Path]:
    names = [a.path for a in client.list_artifacts(run_id, folder) if a.path.endswith(".png")]
    return [Path(client.download_artifacts(run_id, name, str(out))) for name in names]


def real_and_synthetic(real: list[Path], synthetic: list[Path]) -> str:
    """One row per class: the real grid (if the search logged one) beside the synthetic one."""
    by_name = {p.name: p for p in real}
    rows = []
    for grid in synthetic:
        pair = by_name.get(grid.name)
        left = figure(pair, caption=f"real: {pair.stem}") if pair else "<p>(no real grid logged)</p>"
        rows.append(f'<div class="pair">{left}{figure(grid, caption=f"synthetic: {grid.stem}")}</div>')
    return "".join(rows)


def samples_section(client, view: SearchView, rows: list[dict], out: Path) -> str:
    """The best complete trial that made synthetic images: its sample grids beside real images of
    each class (the search's data/real grids), and its ROC curve and confusion matrix."""
    from .tracking import REAL_GRIDS

    real = trial_images(client, view.search.info.run_id, REAL_GRIDS, out / "real")
    complete = [r for r in rows
                if r["outcome"] == outcome.FINISHED and finite_value(view.trials[r["trial_id"]], view.metric)]
    for rank, row in enumerate(complete):
        run = view.trials[row["trial_id"]]
        grids = [p for p in trial_images(client, run.info.run_id, "samples", out / row["trial_id"])
                 if "_unrefined_vs_refined" not in p.stem]
        if not grids:
            continue
        note = (
            "the best complete trial"
            if rank == 0
            else f"the best complete trial with synthetic images (rank {rank + 1}; the best is a baseline)"
        )
        plots = "".join(figure(p, 420) for p in trial_images(client, run.info.run_id, "plots", out / row["trial_id"]))
        return (
            f"<h2>Samples of trial {html.escape(row['trial_id'])}, beside real images</h2>"
            f"<p>{note}: {html.escape(view.metric)} = {row[view.metric]:.4g}, run {html.escape(run.info.run_id)}. "
            "Left: training-pool images of the class (never test images); right: the trial's generator, from the "
            "latent seed every trial uses, so grids compare across trials.</p>"
            f"{real_and_synthetic(real, grids)}<div class=\"row\">{plots}</div>"
        )
    return ("<h2>Samples</h2><p>No complete trial logged sample grids (every complete trial was a baseline, or "
            "none ran every fold).</p>")


EVAL_METRICS = ("auc", "accuracy", "sensitivity", "specificity")


def latest_evaluation(client, view: SearchView):
    """The search's latest finished `gantune evaluate` run, or None."""
    from .runs import evaluation_runs

    finished = [r for r in evaluation_runs(client, view.search.info.experiment_id, view.search.info.run_id)
                if r.info.status == "FINISHED"]
    return finished[0] if finished else None


def evaluated_trial_line(client, view: SearchView, run) -> str:
    """Which trial an evaluation run refitted, and whether it is the trial `gantune promote` would
    register (promote.candidate), so the gate reads it, with the lower bound the gate decides on."""
    from .promote import candidate, evidence_of
    from .runs import trial_id_of

    params = run.data.params
    trial_id = params.get("source_trial_id", "?")
    text = f"evaluation run {run.info.run_id} of trial {trial_id} (run {params.get('source_trial_run_id', '?')})"
    chosen = candidate(client, view.search.info.experiment_id, view.search).best
    if chosen is None:
        return f"{text}; `gantune promote` would register no trial of this search"
    if trial_id_of(chosen) != trial_id:
        return (f"{text}; not the trial `gantune promote` would register (trial {trial_id_of(chosen)}), so the "
                "promotion gate does not count it")
    evidence = evidence_of(run)
    bound = (f", and decides on its lower bound {run.data.metrics[evidence.low]:+.4f} ({evidence.low})"
             if evidence else ", which refuses it: the run logged no test-split lower bound")
    return f"{text}: the trial `gantune promote` would register; the promotion gate reads this evaluation{bound}"


def evaluation_lines(client, view: SearchView) -> list[str]:
    """The terminal report's test-split lines."""
    run = latest_evaluation(client, view)
    if run is None:
        return [f"\nTest split: no evaluation run yet (gantune evaluate --experiment {view.experiment})"]
    paired = paired_text(run)
    return [f"\nTest split: {evaluated_trial_line(client, view, run)}", *([f"  {paired}"] if paired else [])]


def paired_text(run) -> str:
    """'best_config - X, test AUC: +d, 95% t interval ...' of an evaluation run ('' without the difference)."""
    m = run.data.metrics
    delta = m.get("paired_delta_auc", math.nan)
    low, high = m.get("paired_delta_auc_ci_low", math.nan), m.get("paired_delta_auc_ci_high", math.nan)
    baseline = run.data.params.get("better_baseline", "the stronger baseline")
    spread = (f"95% t interval over the paired seeds [{low:+.4f}, {high:+.4f}]" if math.isfinite(low)
              else "no interval (one seed; `--seeds 5` gives one)")
    return f"best_config - {baseline}, test AUC: {delta:+.4f}, {spread}" if math.isfinite(delta) else ""


def evaluation_section(client, view: SearchView) -> str:
    """The latest finished `gantune evaluate` run of the search, named by the trial it refitted:
    test-split mean ± sd per method and the paired difference of best_config to the stronger baseline."""
    run = latest_evaluation(client, view)
    if run is None:
        return ("<h2>Test split</h2><p>No evaluation run yet: `gantune evaluate --experiment "
                f"{html.escape(view.experiment)}` refits the trial `gantune promote` would register and the "
                "baselines and scores them once on the test split; this section then shows the result.</p>")
    m, params = run.data.metrics, run.data.params
    methods = [k.removeprefix("test_").removesuffix("_auc_mean") for k in m
               if k.startswith("test_") and k.endswith("_auc_mean")]
    order = {name: i for i, name in enumerate(("best_config", "real_only", "classic_aug", "trivial_aug"))}
    methods.sort(key=lambda name: order.get(name, len(order)))

    def cell(method: str, metric: str) -> str:
        mean, sd = m.get(f"test_{method}_{metric}_mean", math.nan), m.get(f"test_{method}_{metric}_sd", math.nan)
        return f"{mean:.4f}" + (f" ± {sd:.4f}" if math.isfinite(sd) else "")

    head = "".join(f"<th>{html.escape(c)}</th>" for c in ("method", *EVAL_METRICS))
    body = "".join("<tr>" + f"<td>{html.escape(meth)}</td>" + "".join(f"<td>{cell(meth, k)}</td>" for k in EVAL_METRICS)
                   + "</tr>" for meth in methods)
    paired = f"<p>{html.escape(paired_text(run))}.</p>" if paired_text(run) else ""
    trial = html.escape(params.get("source_trial_id", "?"))
    return (f"<h2>Test split of trial {trial} (evaluation run {html.escape(run.info.run_id)})</h2>"
            f"<p>{html.escape(evaluated_trial_line(client, view, run))}.</p>"
            f"<p>best_config is trial {trial}'s configuration. Mean ± sd over seed(s) "
            f"{html.escape(params.get('seeds', '?'))}, the same seeds for every method, on the untouched test "
            "split.</p>"
            f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{paired}")


HTML_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1250px;padding:0 1em;color:#222}
.wide{overflow-x:auto}table{border-collapse:collapse;font-size:12px}
th,td{border:1px solid #ccc;padding:3px 6px;text-align:right}
th{background:#f0f0f0}table.best tbody tr:first-child td{font-weight:bold}.row{display:flex;flex-wrap:wrap;gap:12px}
.pair{display:flex;gap:16px;margin-bottom:10px}.pair figure{flex:1}
figure{margin:0 0 12px 0}figcaption{font-size:13px;color:#555;text-align:center}.note{color:#a40}
img{max-width:100%;image-rendering:pixelated}
"""


def write_html(
    path: Path, view: SearchView, title_lines: list[str], table: str, plots: list[Path], notes: list[str], samples: str,
    caveats: dict[str, str] | None = None, evaluation: str = "",
) -> None:
    caveats = caveats or {}
    images = "".join(figure(p) + (f'<p class="note">{html.escape(caveats[p.stem])}</p>' if p.stem in caveats else "")
                     for p in plots)
    notes_html = "".join(f'<p class="note">{html.escape(n)}</p>' for n in notes)
    head = "".join(f"<p>{html.escape(line)}</p>" for line in title_lines)
    path.write_text(
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>gantune report: {html.escape(view.experiment)}</title>"
        f"<style>{HTML_STYLE}</style></head><body><h1>gantune report: {html.escape(view.experiment)}</h1>{head}"
        f"{table}{evaluation}<h2>Plots (complete trials)</h2>{notes_html}<div>{images}</div>{samples}</body></html>"
    )


# --- the command ----------------------------------------------------------------------------


def positive_class_line(client, view: SearchView) -> str:
    """Which class sensitivity and the ROC curves are about (data.positive_class, named by the
    search's data/summary.json when it logged one)."""
    from gantune.trainables.config import TrialConfig

    positive = TrialConfig.from_flat(view.space.fixed).data.positive_class
    try:
        with tempfile.TemporaryDirectory() as tmp:
            summary = json.loads(Path(client.download_artifacts(view.search.info.run_id, "data/summary.json", tmp))
                                 .read_text())
        name = f"'{summary['class_names'][positive]}'"
    except Exception:  # noqa: BLE001 - an older or hand-made search without the summary
        name = f"class {positive}"
    return (f"Positive class: {name} (data.positive_class = {positive}): sensitivity is its recall, specificity "
            "the other classes' recall, and each trial's ROC curve is drawn for it.")


def summary_lines(view: SearchView, rows: list[dict]) -> list[str]:
    search = view.search
    started = datetime.fromtimestamp(search.info.start_time / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    counts = outcome_counts([r["outcome"] for r in rows])
    lines = [
        f"Experiment '{view.experiment}', search run {search.info.run_id} "
        f"({search.data.tags.get('mlflow.runName', '')}, started {started})",
        f"{len(rows)} trials ({counts or 'none'}); complete trials ranked by {view.metric} ({view.space.search.mode}), "
        "the mean over their folds",
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
    plots, notes, caveats = optuna_plots(optuna_study(view), view.metric, plots_dir)
    plots.append(ratio_plot(rows, view.space, plots_dir))
    lines = summary_lines(view, rows)
    with tempfile.TemporaryDirectory() as tmp:
        samples = samples_section(client, view, rows, Path(tmp))
        write_html(out / HTML_NAME, view, [*lines, positive_class_line(client, view)], leaderboard_section(view, rows),
                   plots, notes, samples, caveats, evaluation_section(client, view))
    table = format_table(rows[:top], leaderboard_columns(view.space))
    lines += [f"\nTop {min(top, len(rows))} of {len(rows)} trials:", table, *notes, *caveats.values(),
              *evaluation_lines(client, view)]
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
