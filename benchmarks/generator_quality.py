"""Benchmark generator_quality: every GAN family (and the SimGAN refiner) at a few CPU budgets on
one BreastMNIST fold, scored by what a reader can read: gen_fd_ratio (1 = as close to the fold's
training images as its real validation images), gen_tstr_auc (a classifier trained on synthetic
images only, scored on the fold's real validation images), gen_memorized (share of synthetic
images nearer a training image than 95 % of real validation images are), and the CPU seconds
spent (GAN training, sampling and refining; one thread).

Each entry trains with as many GAN steps as fit its budget: the CPU time of a few steps is
measured first and the step count scaled to the budget. The real-side reference (the fold's
real-only feature classifier) is built once and shared by every entry.

    python -m benchmarks.generator_quality --budgets 60 300 900     # the issue's table (long)
    python -m benchmarks.generator_quality --budgets 5 --classifier-steps 100   # a smoke run

Results go to benchmarks/results.json under `generator_quality` (entries, and the best entry by
gen_tstr_auc under `generator_quality.best`)."""

from __future__ import annotations

import argparse
import math
import time

import torch

from gantune.trainables import trial
from gantune.trainables.generative_metrics import RealReferenceCache

from .common import RESULTS, machine, print_machine, print_table, write_results
from .gen_metrics_cost import fold_data, space_config

MODERN = {"gan.conditional": True, "gan.spectral_norm": True, "gan.lecam": 0.3, "gan.ema": 0.99,
          "gan.diffaugment": "translation,cutout"}
"""The recipe's data-efficient training (spaces/breastmnist.yaml), EMA decay for short runs."""

FAMILIES: dict[str, dict] = {
    "dcgan_2016": {"gan.family": "dcgan", "gan.conditional": False, "gan.spectral_norm": False, "gan.loss": "bce",
                   "gan.lecam": 0.0, "gan.ema": 0.0, "gan.diffaugment": ""},
    "dcgan": {"gan.family": "dcgan", **MODERN, "gan.loss": "hinge"},
    "egan": {"gan.family": "egan", **MODERN, "gan.loss": "hinge", "gan.mutations": "minimax,heuristic,hinge"},
    "daegan": {"gan.family": "daegan", **MODERN, "gan.loss": "bce", "gan.mixture_components": 8},
    "daegan+simgan": {"gan.family": "daegan", **MODERN, "gan.loss": "bce", "gan.mixture_components": 8,
                      "synth.refiner": "simgan", "refiner.loss": "hinge", "refiner.lecam": 0.3,
                      "refiner.spectral_norm": True, "refiner.steps": 100, "refiner.pretrain_r_steps": 100,
                      "refiner.pretrain_d_steps": 50, "refiner.width": 32},
}
"""entry name -> overrides of spaces/breastmnist.yaml's fixed values."""

CALIBRATION_STEPS = 4


def cpu_seconds() -> float:
    return time.process_time()


def synthesise(cfg, train, device, seed) -> tuple[trial.Synthetic, float]:
    """(synthetic images at ratio 1 for every class, CPU seconds it took)."""
    start = cpu_seconds()
    synthetic = trial.make_synthetic(cfg, train, trial.synthetic_counts(train, 1.0), device, seed)
    return synthetic, cpu_seconds() - start


def steps_for(cfg, train, device, seed, budget: float) -> int:
    """GAN steps that fit `budget` CPU seconds, from the CPU time of CALIBRATION_STEPS steps."""
    probe = space_with(cfg, {"gan.steps": CALIBRATION_STEPS, "synth.refiner": "none"})
    start = cpu_seconds()
    trial.train_gans(probe, train, list(trial.synthetic_counts(train, 1.0)), device, seed, None, trial.CacheStats())
    per_step = (cpu_seconds() - start) / CALIBRATION_STEPS
    return max(1, int(budget / per_step))


def space_with(cfg, overrides: dict):
    return trial.TrialConfig.from_flat({**cfg.to_flat(), **overrides})


def entry(base, name: str, budget: float, pool, fold, references, device) -> dict:
    cfg = space_with(base, FAMILIES[name])
    train, val = fold.train_view(pool), fold.val_view(pool)
    seed = trial.fold_seed(cfg, fold)
    steps = steps_for(cfg, train, device, seed, budget)
    cfg = space_with(cfg, {"gan.steps": steps, "gan.log_every": max(1, steps // 4)})
    synthetic, seconds = synthesise(cfg, train, device, seed)
    metrics = trial.fold_generative_metrics(cfg, references, fold.index, train, val, synthetic, seed)
    return {"family": name, "budget_cpu_seconds": budget, "gan_steps": steps, "cpu_seconds": round(seconds, 1),
            "fd_ratio": metrics["gen_fd_ratio"], "tstr_auc": metrics["gen_tstr_auc"],
            "memorized": metrics["gen_memorized"]}


def best_entry(entries: list[dict]) -> dict | None:
    """The entry with the highest TSTR AUC (ties: the lower FD ratio)."""
    scored = [e for e in entries if math.isfinite(e["tstr_auc"])]
    return max(scored, key=lambda e: (e["tstr_auc"], -e["fd_ratio"])) if scored else None


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m benchmarks.generator_quality", description=__doc__.split("\n\n")[0])
    p.add_argument("--budgets", type=float, nargs="+", default=[60.0, 300.0, 900.0],
                   help="CPU seconds of GAN training per entry (one thread)")
    p.add_argument("--families", nargs="+", choices=sorted(FAMILIES), default=list(FAMILIES))
    p.add_argument("--classifier-steps", type=int, default=None,
                   help="steps of the feature and TSTR classifiers (default: the recipe's)")
    p.add_argument("--fold", type=int, default=0)
    p.add_argument("--out", default=str(RESULTS))
    return p.parse_args(argv)


def main(argv=None) -> dict:
    from pathlib import Path

    args = parse_args(argv)
    torch.set_num_threads(1)
    device = torch.device("cpu")
    extra = {"classifier.steps": args.classifier_steps} if args.classifier_steps else {}
    base = space_config("spaces/breastmnist.yaml", {"synth.ratio": 1.0, "synth.mode": "pool",
                                                     "synth.classes": "all", **extra})
    pool, fold = fold_data(base, args.fold, device)
    references = RealReferenceCache()
    info = machine()
    print_machine(info)
    entries = []
    for budget in args.budgets:
        for name in args.families:
            entries.append(entry(base, name, budget, pool, fold, references, device))
            print(entries[-1], flush=True)
    best = best_entry(entries)
    print_table([(f"{e['family']}@{e['budget_cpu_seconds']:g}s", f"{e['tstr_auc']:.3f}", "tstr >= 0.85",
                  f"fd_ratio {e['fd_ratio']:.2f}, memorized {e['memorized']:.3f}, {e['gan_steps']} steps, "
                  f"{e['cpu_seconds']:.0f} CPU s") for e in entries])
    figures = {"generator_quality": {"entries": entries, "best": best, "fold": args.fold,
                                     "ran": "python -m benchmarks.generator_quality " + " ".join(argv or [])}}
    write_results(figures, {}, info, "generator_quality", Path(args.out))
    return figures


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
