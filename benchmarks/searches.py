"""Benchmarks 3 and 4: real searches through `run_search` (the CLI's driver), timed from outside
(wall) and from inside (Tune's own per-result `time_total_s` and `timestamp`)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from .common import ROOT

DEMO_SPACE = ROOT / "spaces" / "demo.yaml"


@dataclass(frozen=True)
class TrialTimeline:
    trial_id: str
    results: tuple[dict, ...]
    """Tune's results in report order (one per fold): time_total_s, timestamp, val_auc, ..."""

    @property
    def seconds(self) -> float:
        """Time inside the trial up to its last report (Tune's time_total_s)."""
        return float(self.results[-1]["time_total_s"]) if self.results else 0.0

    @property
    def start(self) -> float:
        first = self.results[0]
        return float(first["timestamp"]) - float(first["time_this_iter_s"])

    @property
    def end(self) -> float:
        return float(self.results[-1]["timestamp"])


@dataclass(frozen=True)
class SearchRun:
    wall_seconds: float
    started: float
    """time.time() when run_search was called (Tune's timestamps are Unix seconds, whole)."""
    concurrent: int
    folds: int
    trials: tuple[TrialTimeline, ...]


def read_trials(storage: Path) -> tuple[TrialTimeline, ...]:
    trials = []
    for path in sorted(storage.glob("*/*/result.json")):
        results = tuple(json.loads(line) for line in path.read_text().splitlines() if line.strip())
        if results:
            trials.append(TrialTimeline(results[0]["trial_id"], results))
    return tuple(trials)


def run_space(overrides: dict, workdir: Path, experiment: str, space_file: Path = DEMO_SPACE, **options) -> SearchRun:
    """One search of `space_file` with `overrides` (space keys, e.g. "search.num_samples"), its
    MLflow store and Tune storage under `workdir`, 1 CPU per trial; `options`: other SearchOptions
    fields (e.g. no_gan_cache=True)."""
    from gantune.search.dataset import load_data
    from gantune.search.space import load_space
    from gantune.search.options import SearchOptions
    from gantune.search.tuner import run_search

    space = load_space(space_file).with_overrides(overrides)
    data, skipped = load_data(space, skip_bad=False)
    storage = workdir / "ray_results"
    options = SearchOptions(
        experiment=experiment, tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}", storage_path=str(storage),
        cpus_per_trial=1.0, quiet=True, **options,
    )
    started, start = time.time(), time.perf_counter()
    run_search(space, data, options, skipped_files=skipped)
    wall = time.perf_counter() - start
    concurrent = min(space.search.max_concurrent, space.search.num_samples)
    folds = int(space.fixed.get("data.folds", 5))
    return SearchRun(wall, started, concurrent, folds, read_trials(storage))


def tune_overhead(run: SearchRun) -> dict:
    """Benchmark 3: 1 - (sum of time inside trials ÷ (wall time × concurrent trials)), with where
    the rest went: before the first trial started, after the last ended, and idle slots between."""
    inside = sum(t.seconds for t in run.trials)
    first_start = min(t.start for t in run.trials)
    last_end = max(t.end for t in run.trials)
    return {
        "tune_overhead": 1 - inside / (run.wall_seconds * run.concurrent),
        "wall_seconds": run.wall_seconds,
        "inside_trials_seconds": inside,
        "concurrent": run.concurrent,
        "trials": len(run.trials),
        "trial_seconds": sorted(round(t.seconds, 1) for t in run.trials),
        "folds_done": sorted(int(t.results[-1].get("folds_done", 0)) for t in run.trials),
        # Tune's timestamps are whole seconds, so these are +-1 s.
        "startup_seconds": first_start - run.started,
        "shutdown_seconds": run.started + run.wall_seconds - last_end,
    }


def compute_to_reach(run: SearchRun, target: float, metric: str = "val_auc") -> float | None:
    """Sum of trial time spent (over all trials, at Tune's result timestamps) until a trial that
    finished every fold first reports `metric` >= target; None if none does."""
    events = sorted(
        (float(r["timestamp"]), t.trial_id, r) for t in run.trials for r in t.results
    )
    spent: dict[str, float] = {}
    for _, trial_id, result in events:
        spent[trial_id] = float(result["time_total_s"])
        if int(result.get("folds_done", 0)) == run.folds and float(result.get(metric, float("-inf"))) >= target:
            return sum(spent.values())
    return None


def best_complete(run: SearchRun, metric: str = "val_auc") -> float:
    """Best metric among trials that finished every fold."""
    return max(
        float(t.results[-1][metric]) for t in run.trials if int(t.results[-1].get("folds_done", 0)) == run.folds
    )


def complete_values(run: SearchRun, metric: str = "val_auc") -> list[float]:
    return sorted(
        float(t.results[-1][metric]) for t in run.trials if int(t.results[-1].get("folds_done", 0)) == run.folds
    )


def search_compute_fraction(asha: SearchRun, random: SearchRun) -> dict:
    """Benchmark 4: compute TPE + ASHA needs to reach random search's best validation AUC ÷
    random search's total compute; None (reached False) when it never reaches it."""
    target = best_complete(random)
    random_total = sum(t.seconds for t in random.trials)
    asha_total = sum(t.seconds for t in asha.trials)
    needed = compute_to_reach(asha, target)
    return {
        "search_compute_fraction": None if needed is None else needed / random_total,
        "reached": needed is not None,
        "asha_total_over_random_total": asha_total / random_total,
        "random_best_val_auc": target,
        "asha_best_val_auc": best_complete(asha),
        "random_complete_val_aucs": complete_values(random),
        "asha_complete_val_aucs": complete_values(asha),
        "random_total_seconds": random_total,
        "asha_total_seconds": asha_total,
        "asha_seconds_to_reach": needed,
        "trials_each": len(random.trials),
        "asha_folds_done": sorted(int(t.results[-1].get("folds_done", 0)) for t in asha.trials),
    }
