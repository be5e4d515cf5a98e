"""Benchmark gan_reuse: the same search twice in one run, generator cache off and on (fresh),
over a staged space (benchmarks/spaces/gan_reuse.yaml: 3 GAN configurations x a searched
downstream part). Same sampler seed and a deterministic CPU pipeline: both searches propose the
same trials and, with the cache on, must reach the same metrics with a fraction of the compute."""

from __future__ import annotations

import tempfile
from pathlib import Path

from .common import ROOT
from .searches import SearchRun, run_space

GAN_REUSE_SPACE = ROOT / "benchmarks" / "spaces" / "gan_reuse.yaml"


def trained_gans(run: SearchRun) -> int:
    """GAN trainings of a search: the cache misses its trials reported (every GAN is one)."""
    return int(sum(float(t.results[-1].get("gan_cache_misses", 0)) for t in run.trials))


def reused_gans(run: SearchRun) -> int:
    return int(sum(float(t.results[-1].get("gan_cache_hits", 0)) for t in run.trials))


def best(run: SearchRun, metric: str = "val_auc") -> tuple[str, float]:
    """(config of the best complete trial as text, its metric) — trial ids differ between runs."""
    top = max((t for t in run.trials if int(t.results[-1].get("folds_done", 0)) == run.folds),
              key=lambda t: float(t.results[-1][metric]))
    config = top.results[-1].get("config", {})
    return repr(sorted(config.items())), float(top.results[-1][metric])


def gan_reuse(num_samples: int = 12) -> dict:
    runs = {}
    for name, cache_off in (("cache_off", True), ("cache_on", False)):
        with tempfile.TemporaryDirectory() as work:
            runs[name] = run_space({"search.num_samples": num_samples}, Path(work), f"bench-{name}",
                                   space_file=GAN_REUSE_SPACE, no_gan_cache=cache_off)
    off, on = runs["cache_off"], runs["cache_on"]
    off_best, on_best = best(off), best(on)
    return {
        "gan_reuse_compute_ratio": sum(t.seconds for t in on.trials) / sum(t.seconds for t in off.trials),
        "trial_seconds_cache_off": sum(t.seconds for t in off.trials),
        "trial_seconds_cache_on": sum(t.seconds for t in on.trials),
        "wall_seconds_cache_off": off.wall_seconds,
        "wall_seconds_cache_on": on.wall_seconds,
        "gan_trainings_cache_off": trained_gans(off),
        "gan_trainings_cache_on": trained_gans(on),
        "gans_reused_cache_on": reused_gans(on),
        "trials": num_samples,
        "best_trial_agrees": off_best == on_best,
        "best_val_auc_cache_off": off_best[1],
        "best_val_auc_cache_on": on_best[1],
        "ran": f"{GAN_REUSE_SPACE.relative_to(ROOT)} --num-samples {num_samples}, "
        "once with --no-gan-cache, once with a fresh cache",
    }
