"""`gantune evaluate`: the one-shot test evaluation of an experiment's latest search.

The best trial's configuration and the two baselines (real-only; classic augmentation) are each
refitted on the whole training pool and scored once on the untouched test split, with the same
seeds 0..S-1 for every method, so the seeds pair the methods: the difference of the best config
to the better baseline gets a paired t confidence interval.

Refit: the pool minus a stratified 1/k (the data seed's first fold; k = data.folds), which only
early-stops the classifier; GANs, refiners and filters see the refit's training images only (the
same `fit_pipeline` as every fold of the search). The test split is read here and nowhere else."""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from scipy import stats

from gantune.trainables.config import TrialConfig
from gantune.trainables.data.datasets import DataSplits, ImageDataset
from gantune.trainables.data.folds import Fold, make_folds
from gantune.trainables.metrics import METRIC_NAMES
from gantune.trainables.trial import enhance, fit_pipeline, score

from .bars import progress_bar, write_line
from .leaderboard import format_table as text_table
from .leaderboard import rank_runs
from .runs import experiment_and_latest_search, read_json, resolved_space, trial_config, trial_id_of, trial_runs

METHODS = ("best_config", "real_only", "classic_aug")
BASELINES = METHODS[1:]
TABLE_METRICS = ("auc", "accuracy", "sensitivity", "specificity")
DEFAULT_CLASSIC_STRENGTH = 1.0
"""Classic-augmentation strength when the search had no classic_aug baseline to take it from."""
CONFIDENCE = 0.95


class EvaluateError(ValueError):
    """No such experiment, no finished search, or a search whose best trial cannot be rebuilt."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--experiment", required=True, help="MLflow experiment whose latest finished search to evaluate")
    p.add_argument("--split", choices=("test",), default="test", help="split scored once (only 'test': the untouched split)")
    p.add_argument("--seeds", type=int, default=5, help="seeds 0..S-1, the same for every method (default: 5)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///./mlflow.db)")
    p.add_argument("--data", help="dataset path; overrides the searched data.path (must be the same dataset)")
    p.add_argument("--dry-run", action="store_true", help="print the three configurations and exit without training")


# --- what to evaluate -------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """The search and trial an evaluation starts from."""

    experiment_id: str
    search: object
    """The search's parent MLflow run."""
    trial: object
    """The best trial's MLflow run."""
    cfg: TrialConfig
    """The best trial's configuration, rebuilt from its config/trial_config.json."""
    resolved: dict
    """The search's config/resolved_space.json."""
    classic_strength: float
    classic_source: str
    """Where the classic-augmentation strength came from (a trial id, or the default)."""


def ranked_trials(client, experiment_id: str, search, metric: str, mode: str, baseline: str | None = None) -> list:
    """The search's usable trial runs (leaderboard.usable), best first."""
    extra = f"tags.`gantune.baseline` = '{baseline}'" if baseline else ""
    return rank_runs(trial_runs(client, experiment_id, search.info.run_id, extra), metric, mode)


def find_source(client, experiment_name: str) -> Source:
    from gantune.trainables.tracking import find_trial_run

    experiment, search = experiment_and_latest_search(client, experiment_name, EvaluateError)
    resolved = resolved_space(client, search.info.run_id, EvaluateError)
    metric, mode = resolved["search"]["metric"], resolved["search"]["mode"]
    best_id = search.data.tags.get("gantune.best_trial_id")
    trial = find_trial_run(client, experiment.experiment_id, search.info.run_id, best_id) if best_id else None
    if trial is None:  # a search that ended before tagging its best trial: rank the trials here
        ranked = ranked_trials(client, experiment.experiment_id, search, metric, mode)
        if not ranked:
            raise EvaluateError(f"search {search.info.run_id} of '{experiment_name}' has no trial with a finite '{metric}'")
        trial = ranked[0]
    classic = ranked_trials(client, experiment.experiment_id, search, metric, mode, baseline="classic_aug")
    strength, origin = DEFAULT_CLASSIC_STRENGTH, "default (the search had no classic_aug baseline)"
    if classic:
        strength = trial_config(client, classic[0], EvaluateError).augment.strength
        origin = f"trial {trial_id_of(classic[0])}"
    return Source(experiment.experiment_id, search, trial, trial_config(client, trial, EvaluateError), resolved, strength, origin)


def method_configs(best: TrialConfig, classic_strength: float) -> dict[str, TrialConfig]:
    """The three evaluated methods: the best trial's configuration as it is; the same with no
    synthetic image and no augmentation; the same with no synthetic image and classic augmentation."""
    no_synth = replace(best.synth, ratio=0.0)
    return {
        "best_config": best,
        "real_only": replace(best, synth=no_synth, augment=replace(best.augment, enabled=False)),
        "classic_aug": replace(best, synth=no_synth, augment=replace(best.augment, enabled=True, strength=classic_strength)),
    }


# --- refit and score ----------------------------------------------------------------------------


def refit_split(data: DataSplits, cfg: TrialConfig) -> Fold:
    """Pool indices of the refit: train on all but a stratified 1/k of the pool, which only
    early-stops the classifier; fixed by data.seed (the search's first fold), so every method and
    seed shares it."""
    labels = data.pool.labels.cpu().numpy()
    return make_folds(labels, cfg.data.folds, cfg.data.seed, groups=data.groups)[0]


def enhanced(data: ImageDataset, cfg: TrialConfig, device: torch.device) -> ImageDataset:
    """The trial's per-image enhancement, as run_trial applies it to the pool."""
    data = data.to(device)
    return ImageDataset(enhance(data.images, cfg.enhance), data.labels, data.class_names, data.source)


Progress = Callable[[str], None]


def evaluate_methods(
    configs: dict[str, TrialConfig], data: DataSplits, seeds: list[int], device: torch.device,
    progress: Progress = print,
) -> tuple[dict[str, list[dict[str, float]]], Fold]:
    """Per method, one metrics dict per seed (same seeds for every method), scored on data.test."""
    first = next(iter(configs.values()))
    split = refit_split(data, first)
    results: dict[str, list[dict[str, float]]] = {m: [] for m in configs}
    total, done = len(configs) * len(seeds), 0
    with progress_bar(total, "evaluate", "fit") as bar:
        for method, cfg in configs.items():
            pool, test = enhanced(data.pool, cfg, device), enhanced(data.test, cfg, device)
            train, early_stop = split.train_view(pool), split.val_view(pool)
            for seed in seeds:
                bar.set_postfix_str(f"{method} seed {seed}")
                start = time.monotonic()
                model, _, _ = fit_pipeline(replace(cfg, seed=seed), train, early_stop, device, seed)
                metrics, _, _ = score(model, test, cfg.data.positive_class)
                results[method].append(metrics)
                done += 1
                progress(f"[{done}/{total}] {method} seed {seed}: test auc {metrics['auc']:.4f}, "
                         f"accuracy {metrics['accuracy']:.4f} ({time.monotonic() - start:.0f} s)")
                bar.update(1)
    return results, split


# --- statistics -------------------------------------------------------------------------------


def mean_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; nan for one seed)."""
    a = np.asarray(values, dtype=float)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else float("nan")


def paired_ci(a: list[float], b: list[float], confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """(mean of a - b, CI low, CI high): the paired t interval over seeds (nan bounds for one seed)."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    mean = float(d.mean())
    if len(d) < 2:
        return mean, float("nan"), float("nan")
    half = float(stats.t.ppf(0.5 + confidence / 2, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d)))
    return mean, mean - half, mean + half


@dataclass(frozen=True)
class Evaluation:
    results: dict[str, list[dict[str, float]]]
    """method -> one metrics dict per seed."""
    seeds: list[int]
    baseline: str
    """The better baseline (higher mean test value of `ranking_metric`), the one the best config is compared with."""
    ranking_metric: str

    def summary(self, method: str, metric: str) -> tuple[float, float]:
        return mean_sd([r[metric] for r in self.results[method]])

    def delta(self, metric: str) -> tuple[float, float, float]:
        return paired_ci([r[metric] for r in self.results["best_config"]], [r[metric] for r in self.results[self.baseline]])

    def metrics(self) -> dict[str, float]:
        """test_<method>_<metric>_mean/_sd and paired_delta_<metric> (+ _ci_low/_ci_high)."""
        out = {}
        for method in self.results:
            for metric in METRIC_NAMES:
                out[f"test_{method}_{metric}_mean"], out[f"test_{method}_{metric}_sd"] = self.summary(method, metric)
        for metric in METRIC_NAMES:
            out[f"paired_delta_{metric}"], out[f"paired_delta_{metric}_ci_low"], out[f"paired_delta_{metric}_ci_high"] = self.delta(metric)
        return out


def compare(results: dict[str, list[dict[str, float]]], seeds: list[int], ranking_metric: str = "auc") -> Evaluation:
    better = max(BASELINES, key=lambda b: mean_sd([r[ranking_metric] for r in results[b]])[0])
    return Evaluation(results, seeds, better, ranking_metric)


def ranking_metric_of(search_metric: str) -> str:
    """The test metric matching the search's objective (val_auc -> auc); auc for anything else."""
    name = search_metric.removeprefix("val_")
    return name if name in TABLE_METRICS else "auc"


# --- output -----------------------------------------------------------------------------------


def fmt(mean: float, sd: float) -> str:
    return f"{mean:.4f} ± {sd:.4f}" if not math.isnan(sd) else f"{mean:.4f}"


def format_table(ev: Evaluation, split: str) -> str:
    rows = [{"method": m, **{k: fmt(*ev.summary(m, k)) for k in TABLE_METRICS}} for m in ev.results]
    n = len(ev.seeds)
    lines = [
        f"{split} split, mean ± sd over {n} seed{'s' if n > 1 else ''} ({', '.join(map(str, ev.seeds))}), same seeds for every method:",
        text_table(rows, ["method", *TABLE_METRICS]),
        "",
        f"paired difference best_config - {ev.baseline} (the better baseline by mean test {ev.ranking_metric}), "
        f"{CONFIDENCE:.0%} t confidence interval over the {n} paired seeds:",
    ]
    for metric in TABLE_METRICS:
        mean, low, high = ev.delta(metric)
        interval = f"[{low:+.4f}, {high:+.4f}]" if not math.isnan(low) else "(one seed: no interval)"
        lines.append(f"  {metric:<12} {mean:+.4f}  {interval}")
    return "\n".join(lines)


def summary_csv(ev: Evaluation) -> str:
    """Long format: one row per (method, metric) with mean and sd, then the paired deltas with CI."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["row", "metric", "seeds", "mean", "sd", "ci_low", "ci_high"])
    for method in ev.results:
        for metric in METRIC_NAMES:
            writer.writerow([method, metric, len(ev.seeds), *ev.summary(method, metric), "", ""])
    for metric in METRIC_NAMES:
        mean, low, high = ev.delta(metric)
        writer.writerow([f"best_config-{ev.baseline}", metric, len(ev.seeds), mean, "", low, high])
    return buffer.getvalue()


def per_seed_csv(ev: Evaluation) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["method", "seed", *METRIC_NAMES])
    for method, runs in ev.results.items():
        for seed, metrics in zip(ev.seeds, runs):
            writer.writerow([method, seed, *(metrics[m] for m in METRIC_NAMES)])
    return buffer.getvalue()


def log_evaluation(client, source: Source, ev: Evaluation, split: str, table: str, held_out: np.ndarray, configs: dict[str, TrialConfig]) -> str:
    """An MLflow run nested under the search's parent run; returns its id."""
    from mlflow.entities import Metric, Param

    trial_id = trial_id_of(source.trial)
    run = client.create_run(source.experiment_id, tags={
        "gantune.role": "evaluation",
        "mlflow.parentRunId": source.search.info.run_id,
        "mlflow.runName": f"evaluate-{split}-{trial_id}",
    })
    run_id = run.info.run_id
    params = {
        "split": split,
        "seeds": ",".join(map(str, ev.seeds)),
        "source_trial_id": trial_id,
        "source_trial_run_id": source.trial.info.run_id,
        "search_run_id": source.search.info.run_id,
        "better_baseline": ev.baseline,
        "classic_aug_strength": source.classic_strength,
        "classic_aug_strength_from": source.classic_source,
        "early_stop_images": len(held_out),
    }
    now = int(1000 * time.time())
    client.log_batch(
        run_id,
        metrics=[Metric(k, v, now, 0) for k, v in ev.metrics().items() if not math.isnan(v)],
        params=[Param(k, str(v)) for k, v in params.items()],
    )
    client.log_text(run_id, table + "\n", "evaluation.txt")
    client.log_text(run_id, summary_csv(ev), "evaluation.csv")
    client.log_text(run_id, per_seed_csv(ev), "evaluation_per_seed.csv")
    # The pool images held out of every refit to early-stop the classifier (pool order).
    client.log_text(run_id, "\n".join(map(str, held_out.tolist())) + "\n", "early_stop_pool_indices.txt")
    for method, cfg in configs.items():
        client.log_dict(run_id, cfg.to_flat(), f"config/{method}.json")
    client.set_terminated(run_id, status="FINISHED")
    return run_id


# --- the command ----------------------------------------------------------------------------


def load_search_data(source: Source, data_path: str | None) -> DataSplits:
    """The searched dataset (or --data), loaded as the search loaded it: same preprocessing, and
    the same fixed test split for datasets without an official one."""
    from gantune.trainables.data.check import load_dataset
    from gantune.trainables.data.datasets import DatasetError

    from .dataset import resolve_data_path

    cfg = source.cfg
    path = Path(data_path) if data_path else resolve_data_path(cfg.data.path, source.resolved.get("space_file", "."))
    if not path.exists():
        flag = "--data" if data_path else f"the search's data.path {cfg.data.path!r}"
        raise EvaluateError(f"{path}: {flag} does not exist; pass --data PATH")
    try:
        data, _ = load_dataset(path, cfg.preprocess, folds=cfg.data.folds, seed=cfg.data.seed)
    except DatasetError as exc:
        raise EvaluateError(str(exc)) from exc
    return data


def check_same_data(client, source: Source, data: DataSplits) -> None:
    """Refuse a dataset whose pool differs from the searched one (a wrong --data)."""
    try:
        summary = read_json(client, source.search.info.run_id, "data/summary.json", EvaluateError)
    except EvaluateError:
        return  # a search that did not log its data summary: nothing to compare with
    if summary.get("pool_class_counts") not in (None, data.pool.class_counts()):
        raise EvaluateError(
            f"the dataset's pool class counts {data.pool.class_counts()} differ from the searched "
            f"{summary['pool_class_counts']}: evaluate the dataset the search ran on"
        )


def evaluate(tracking_uri: str, experiment: str, split: str = "test", seeds: int = 5, data_path: str | None = None,
             progress: Progress = print, dry_run: bool = False) -> tuple[str, str | None]:
    """(printable text, evaluation run id (None on a dry run))."""
    from mlflow.tracking import MlflowClient

    if seeds < 1:
        raise EvaluateError(f"--seeds must be >= 1, got {seeds}")
    client = MlflowClient(tracking_uri)
    source = find_source(client, experiment)
    configs = method_configs(source.cfg, source.classic_strength)
    trial_id = trial_id_of(source.trial)
    header = (
        f"Experiment '{experiment}', search run {source.search.info.run_id}; best trial {trial_id} "
        f"(run {source.trial.info.run_id}); classic_aug strength {source.classic_strength:g} from {source.classic_source}"
    )
    if dry_run:
        flat = {m: {k: v for k, v in c.to_flat().items() if k.split(".")[0] in ("synth", "augment")} for m, c in configs.items()}
        return header + "\n" + json.dumps(flat, indent=2), None
    data = load_search_data(source, data_path)
    check_same_data(client, source, data)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    progress(header)
    refit = refit_split(data, source.cfg)
    progress(f"refit on {len(refit.train_idx)} of the {len(data.pool)} pool images ({len(refit.val_idx)} = 1/{source.cfg.data.folds} "
             f"held out to early-stop the classifier), scored on {len(data.test)} {split} images; "
             f"{len(configs)} methods x {seeds} seeds")
    results, _ = evaluate_methods(configs, data, list(range(seeds)), device, progress)
    ev = compare(results, list(range(seeds)), ranking_metric_of(source.resolved["search"]["metric"]))
    table = format_table(ev, split)
    run_id = log_evaluation(client, source, ev, split, table, refit.val_idx, configs)
    return f"\n{table}\n\nLogged as evaluation run {run_id} (tag gantune.role=evaluation) under search run {source.search.info.run_id}", run_id


def evaluate_main(args) -> int:
    text, _ = evaluate(args.tracking_uri, args.experiment, args.split, args.seeds, args.data,
                       progress=write_line, dry_run=args.dry_run)
    print(text)
    return 0
