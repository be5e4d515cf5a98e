"""The leaderboard of a search, pure: a trial's outcome, the ONE rule of which trials
count (`usable`) and how they rank, the rows (with deltas against each baseline), their columns
and their text cells. Tune results (at the end of a search) and MLflow runs (`gantune report`)
both become rows here; nothing in this module imports Ray or MLflow."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from gantune.trainables import outcome
from gantune.trainables.config import TrialConfig
from gantune.trainables.generative_metrics import GEN_HEADLINE_NAMES
from gantune.trainables.metrics import METRIC_NAMES


@dataclass(frozen=True)
class TrialResult:
    """One trial as the leaderboard reads it; a Tune `Result` has the same three attributes, and
    search/runs.py builds these from trial MLflow runs."""

    metrics: dict[str, Any]
    config: dict[str, Any]
    error: bool


def reported_failure(metrics: dict) -> str | None:
    """outcome.DIVERGED / OOM / REJECTED for a trial that reported its failure (worst metric value)
    instead of raising; None otherwise."""
    flags = {"diverged": outcome.DIVERGED, "oom": outcome.OOM, "rejected": outcome.REJECTED}
    return next((ended for flag, ended in flags.items() if metrics.get(flag)), None)


def usable(metrics: dict, metric: str, failed: bool = False) -> bool:
    """The one rule of a trial that counts (ranked, plotted, promoted, the best so far): a finite
    `metric`, no error, and no reported divergence or out-of-memory."""
    value = metrics.get(metric)
    return value is not None and math.isfinite(value) and not failed and reported_failure(metrics) is None


def run_usable(run, metric: str) -> bool:
    """`usable` for a trial MLflow run (FAILED = the trial errored)."""
    return usable(run.data.metrics, metric, failed=run.info.status == "FAILED")


def rank_runs(runs: list, metric: str, mode: str) -> list:
    """The usable trial MLflow runs, best first."""
    sign = -1 if mode == "max" else 1
    return sorted((r for r in runs if run_usable(r, metric)), key=lambda r: sign * r.data.metrics[metric])


def fold_spread(metric: str) -> bool:
    """Whether trials report the metric's worst fold (the classification metrics do)."""
    return metric in {f"val_{m}" for m in METRIC_NAMES}


def trial_outcome(errored: bool, metrics: dict, total_folds: int) -> str:
    """How an ended trial ended (trainables/outcome.py): failed, diverged, out of memory, stopped
    early (the scheduler ended it after fewer folds) or finished."""
    if errored:
        return outcome.FAILED
    if failure := reported_failure(metrics):
        return failure
    return outcome.STOPPED if metrics.get("folds_done", 0) < total_folds else outcome.FINISHED


def outcome_counts(outcomes: list[str]) -> str:
    """'2 finished, 4 stopped early' in outcome.MLFLOW_STATUS order, zero counts left out."""
    return ", ".join(f"{outcomes.count(o)} {o}" for o in outcome.MLFLOW_STATUS if o in outcomes)


def row_usable(row: dict, metric: str) -> bool:
    """`usable` for a leaderboard row (its outcome already says failed / diverged / out of memory)."""
    return math.isfinite(row[metric]) and row["outcome"] in (outcome.FINISHED, outcome.STOPPED)


GAN_CACHE_METRICS = ("gan_cache_hits", "gan_cache_misses", "gan_train_seconds")
"""What each trial reports of the generator cache (trainables/gans/cache.py), summed on the parent run."""


def gan_cache_totals(rows: list[dict]) -> dict[str, float]:
    return {k: float(sum(r.get(k, 0.0) for r in rows)) for k in GAN_CACHE_METRICS}


def gan_cache_line(rows: list[dict]) -> str:
    """'GANs: 6 trained (410 s), 18 reused from the cache' for the leaderboard footer."""
    t = gan_cache_totals(rows)
    return (f"GANs: {t['gan_cache_misses']:.0f} trained ({t['gan_train_seconds']:.0f} s), "
            f"{t['gan_cache_hits']:.0f} reused from the generator cache")


def gen_columns(space) -> list[str]:
    """The headline generative metrics (gen_fd_ratio, gen_tstr_auc, gen_memorized) when the
    space's trials log them, less any the search already shows as an objective."""
    shown = {space.search.metric, *space.search.objectives}
    return [k for k in GEN_HEADLINE_NAMES if k not in shown] if space.logs_gen_metrics() else []


def leaderboard_rows(result_grid, space) -> list[dict]:
    """One row per trial, best first, with its delta against each baseline of the search and
    against the better of them."""
    metric, mode = space.search.metric, space.search.mode
    total_folds = TrialConfig.from_flat(space.fixed).data.total_folds
    rows, folds_of = [], []  # folds_of: per row, the per-fold values of the metric (or None)
    for result in result_grid:
        m = result.metrics or {}
        folds_of.append(fold_values(m, metric, total_folds))
        value = m.get(metric)
        rows.append({
            "trial_id": m.get("trial_id", ""),
            metric: float(value) if value is not None else float("nan"),
            **({f"{metric}_min_fold": float(m.get(f"{metric}_min_fold", float("nan")))} if fold_spread(metric) else {}),
            **{k: float(m.get(k, float("nan"))) for k in space.search.objectives[1:]},  # multi-objective
            **{k: float(m.get(k, float("nan"))) for k in gen_columns(space)},  # nan for baselines
            "baseline": space.baseline_of(result.config) or "",
            "folds_done": m.get("folds_done", 0),
            "outcome": trial_outcome(bool(result.error), m, total_folds),
            **{k: float(m.get(k, 0.0)) for k in GAN_CACHE_METRICS},
            **({ACCEPT_RATE: float(m.get(ACCEPT_RATE, float("nan")))} if selects(space) else {}),
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
    if space.search.rank_by == "paired_lcb":
        add_paired_lcb(rows, folds_of, space)
    return sorted(rows, key=lambda r: rank_key(r, space))


def leaderboard_columns(space) -> list[str]:
    metric = space.search.metric
    deltas = [f"delta_{metric}_vs_{name}" for name in space.search.baselines]
    if len(deltas) > 1:
        deltas.append(f"delta_{metric}_vs_best_baseline")
    spread = [f"{metric}_min_fold"] if fold_spread(metric) else []
    lcb = [paired_lcb_column(metric)] if space.search.rank_by == "paired_lcb" else []
    return [
        "trial_id",
        metric,
        *spread,
        *space.search.objectives[1:],
        *gen_columns(space),
        *deltas,
        *lcb,
        "baseline",
        "folds_done",
        "outcome",
        *([ACCEPT_RATE] if selects(space) else []),
        *sorted(space.domains),
    ]


ACCEPT_RATE = "synth_accept_rate"
"""What a trial with synth.select reports: the share of candidate synthetic images kept."""


def selects(space) -> bool:
    """Whether trials of the space may select synthetic images (synth.select searched, or fixed
    to something other than 'none'): the leaderboard then shows their acceptance rate."""
    return "synth.select" in space.domains or space.fixed.get("synth.select", "none") != "none"


def cell(value) -> str:
    """One table cell, the same in the terminal and in report.html."""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def value_text(value) -> str:
    """A hyperparameter value in a one-line trial summary (progress and --quiet lines)."""
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def table_cells(rows: list[dict], columns: list[str]) -> list[list[str]]:
    """The rows' cells, one list per row, in `columns` order."""
    return [[cell(r.get(c, "")) for c in columns] for r in rows]


def format_table(rows: list[dict], columns: list[str]) -> str:
    body = table_cells(rows, columns)
    widths = [max(len(c), *(len(b[i]) for b in body)) if body else len(c) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(b, widths)) for b in body]
    return "\n".join(lines)


# --- honest selection: complete trials, paired per-fold differences ---------------------------

RANK_BY = ("mean", "paired_lcb")
"""How complete trials rank (space key search.rank_by): 'mean', the metric's mean over folds; or
'paired_lcb', the one-sided 95 % lower confidence bound of the trial's paired per-fold difference
to the real_only baseline trial (so a trial with a lucky fold does not outrank a steady one)."""


def fold_values(metrics: dict, metric: str, total_folds: int) -> list[float] | None:
    """A trial's per-fold values of `metric` (fold{i}_<metric>, i < total_folds), None unless the
    trial reported every fold with a finite value."""
    values = [metrics.get(f"fold{i}_{metric}") for i in range(total_folds)]
    return None if any(v is None or not math.isfinite(v) for v in values) else [float(v) for v in values]


def run_complete(run, metric: str, total_folds: int) -> bool:
    """A usable trial run that finished every fold (not stopped early by the scheduler)."""
    return (run_usable(run, metric) and run.info.status == "FINISHED"
            and trial_outcome(False, run.data.metrics, total_folds) == outcome.FINISHED)


def paired_folds(a: list[float] | None, b: list[float] | None, mode: str, folds: int):
    """search.stats.FoldDelta of per-fold values a against b on the same folds (fold i with fold
    i: the data section, hence the split, is fixed per search), oriented so that positive means
    better (a 'min' metric is negated) and with the Nadeau-Bengio correction for k-fold
    (test/train = 1/(k-1)); None unless both are given."""
    from .stats import fold_delta

    if a is None or b is None:
        return None
    sign = 1.0 if mode == "max" else -1.0
    return fold_delta(
        [sign * v for v in a], [sign * v for v in b], test_train_ratio=1 / (folds - 1) if folds > 1 else 0.0
    )


def paired_to_baseline(metrics: dict, baseline_metrics: dict, metric: str, mode: str, total_folds: int, folds: int):
    """`paired_folds` of two trials' metrics (None unless both reported every fold)."""
    return paired_folds(fold_values(metrics, metric, total_folds), fold_values(baseline_metrics, metric, total_folds),
                        mode, folds)


def paired_lcb_column(metric: str) -> str:
    return f"paired_lcb_{metric}_vs_real_only"


def add_paired_lcb(rows: list[dict], folds_of: list, space) -> None:
    """Each row's paired lower bound to the best complete real_only row (nan without one, or for a
    trial that did not report every fold)."""
    metric, mode = space.search.metric, space.search.mode
    data = TrialConfig.from_flat(space.fixed).data
    column = paired_lcb_column(metric)
    base = [
        (r, f) for r, f in zip(rows, folds_of)
        if r["baseline"] == "real_only" and r["outcome"] == outcome.FINISHED and f is not None
    ]
    best = (max if mode == "max" else min)(base, key=lambda rf: rf[0][metric])[1] if base else None
    for row, folds in zip(rows, folds_of):
        paired = paired_folds(folds, best, mode, data.folds)
        row[column] = paired.lcb if paired is not None else float("nan")


OUTCOME_ORDER = {outcome.FINISHED: 0, outcome.STOPPED: 1}
"""Complete trials rank first, then trials the scheduler stopped early, then failed ones."""


def rank_key(row: dict, space) -> tuple:
    """Leaderboard order: by outcome (OUTCOME_ORDER), then by the paired lower bound (search.rank_by
    paired_lcb; higher is better), then by the metric's mean; nan values last in each."""
    metric = space.search.metric
    sign = -1 if space.search.mode == "max" else 1
    mean = row[metric]
    lcb = row.get(paired_lcb_column(metric), math.nan)
    return (OUTCOME_ORDER.get(row["outcome"], 2), math.isnan(lcb), 0.0 if math.isnan(lcb) else -lcb,
            math.isnan(mean), 0.0 if math.isnan(mean) else sign * mean)


def rank_complete_runs(runs: list, metric: str, mode: str, total_folds: int, folds: int,
                       rank_by: str = "mean", baseline=None) -> list:
    """The complete trial runs, best first: by the metric's mean, or (rank_by 'paired_lcb') by the
    lower bound of the paired per-fold difference to `baseline` (a real_only trial run), trials
    without one last, in mean order."""
    if rank_by not in RANK_BY:
        raise ValueError(f"rank_by must be one of {list(RANK_BY)}, got {rank_by!r}")
    ranked = rank_runs([r for r in runs if run_complete(r, metric, total_folds)], metric, mode)
    if rank_by == "mean" or baseline is None:
        return ranked

    def lcb(run) -> float:
        paired = paired_to_baseline(run.data.metrics, baseline.data.metrics, metric, mode, total_folds, folds)
        return paired.lcb if paired is not None and math.isfinite(paired.lcb) else -math.inf

    return sorted(ranked, key=lcb, reverse=True)  # stable: ties keep mean order


def fixed_folds(fixed: dict) -> tuple[int, int]:
    """(folds per trial = data.folds x data.repeats, k = data.folds) from a search's fixed values
    (the data section is fixed per search); the defaults for what it does not set."""
    data = TrialConfig.from_flat({k: v for k, v in fixed.items() if k.startswith("data.")}).data
    return data.total_folds, data.folds


def rank_for_selection(runs: list, metric: str, mode: str, fixed: dict, rank_by: str = "mean") -> list:
    """What `evaluate` picks from: the complete trial runs ranked by `rank_by` (against the best
    complete real_only run), or the usable ones by mean when no trial finished every fold."""
    total, k = fixed_folds(fixed)
    real = rank_complete_runs(
        [r for r in runs if r.data.tags.get("gantune.baseline") == "real_only"], metric, mode, total, k
    )
    complete = rank_complete_runs(runs, metric, mode, total, k, rank_by, real[0] if real else None)
    return complete or rank_runs(runs, metric, mode)
