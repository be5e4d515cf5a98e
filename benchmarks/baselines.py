"""Real-only baselines on BreastMNIST (28 px) with the standard MedMNIST protocol.

    nice -n 10 python -m benchmarks.baselines            # the grid below, 3 seeds
    python -m benchmarks.baselines --dry-run              # print the settings, train nothing

Each classifier is trained on the official train split (546 images), early-stopped on the official
val split (78; the weights with the lowest val loss are kept, as fit_classifier does), and scored
once on the test split (156) with malignant (label 0) as the positive class. Every setting here
was chosen by looking at val numbers only (`--select` prints them without touching the test
split); the test AUC is computed once per run, after training, and never feeds back. Results go to
benchmarks/baselines_results.json (one row per run plus mean +- sd per classifier x augmentation)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from gantune.trainables.classifiers import (
    ClassifierConfig,
    fit_classifier,
    predict_proba,
)
from gantune.trainables.data.augment import (
    ULTRASOUND_CLASSIC,
    AugmentConfig,
    make_augment,
)
from gantune.trainables.metrics import classification_metrics

from .common import BREASTMNIST, ROOT, machine, print_machine

OUT = ROOT / "benchmarks" / "baselines_results.json"
POSITIVE = 0  # malignant, the "diseased" class of BreastMNIST (MedMNIST label 0)

CLASSIFIERS: dict[str, ClassifierConfig] = {
    # The shipped default of spaces/demo.yaml: the eye paper's CNN, unnormalised, width 0.125.
    "cnn": ClassifierConfig(name="cnn", width=0.125, optimizer="adam", lr=1e-3),
    # The reference network: 287k parameters at width 1.
    "cnn_bn": ClassifierConfig(name="cnn_bn", width=1.0, optimizer="adam", lr=1e-3),
    # MedMNIST v2's network (random init); width 0.5 (2.8M parameters) fits the CPU budget here.
    "resnet18": ClassifierConfig(name="resnet18", width=0.5, optimizer="adam", lr=1e-3),
}
"""Name -> the classifier settings of its runs (steps, batch, eval_every, patience set below)."""

AUGMENTS: dict[str, AugmentConfig] = {
    "off": AugmentConfig(),
    "classic": AugmentConfig(enabled=True, **ULTRASOUND_CLASSIC),
    "trivial": AugmentConfig(enabled=True, policy="trivial"),
}
"""Augmentation arm -> its config: classic with the ultrasound settings, TrivialAugment at
strength 1."""


def load_splits(path: Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{split: (images (N, 1, 28, 28) in [-1, 1], labels (N,) int64)} of a MedMNIST .npz."""
    if not path.exists():
        raise SystemExit(f"{path}: not found (the BreastMNIST file ships in data/)")
    with np.load(path) as z:
        missing = [f"{s}_{k}" for s in ("train", "val", "test") for k in ("images", "labels") if f"{s}_{k}" not in z]
        if missing:
            raise SystemExit(f"{path}: not a MedMNIST file, missing {missing}")
        return {
            s: (
                torch.from_numpy(z[f"{s}_images"].astype(np.float32) / 127.5 - 1)[:, None],
                torch.from_numpy(z[f"{s}_labels"].reshape(-1).astype(np.int64)),
            )
            for s in ("train", "val", "test")
        }


def run_one(cfg: ClassifierConfig, aug: AugmentConfig, splits: dict, seed: int, score_test: bool) -> dict:
    """Train one classifier; val metrics always, test metrics only when score_test."""
    (xtr, ytr), (xva, yva), (xte, yte) = splits["train"], splits["val"], splits["test"]
    checks: list[tuple[int, float]] = []
    start = time.perf_counter()
    model = fit_classifier(
        cfg, xtr, ytr, xva, yva, 2, seed=seed, augment=make_augment(aug),
        report=lambda step, m: checks.append((step, m["clf_val_loss"])),
    )
    seconds = time.perf_counter() - start
    best_step = min(checks, key=lambda c: c[1])[0]
    row = {
        "seed": seed, "seconds": round(seconds, 1), "stopped_at_step": checks[-1][0], "best_step": best_step,
        "val_loss": round(min(c[1] for c in checks), 4),
        "val_auc": classification_metrics(yva.numpy(), predict_proba(model, xva).numpy(), POSITIVE)["auc"],
    }
    if score_test:
        row["test"] = classification_metrics(yte.numpy(), predict_proba(model, xte).numpy(), POSITIVE)
        row["test_auc"] = row["test"]["auc"]
    return row


def summary(rows: list[dict], key: str) -> dict:
    values = [r[key] for r in rows]
    return {
        "mean": round(statistics.mean(values), 4),
        "sd": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0,
        "seeds": [r["seed"] for r in rows],
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.baselines", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=BREASTMNIST, help="MedMNIST .npz (default data/breastmnist.npz)")
    p.add_argument("--classifiers", default=",".join(CLASSIFIERS), help=f"comma list of {sorted(CLASSIFIERS)}")
    p.add_argument("--augments", default=",".join(AUGMENTS), help=f"comma list of {sorted(AUGMENTS)}")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per cell")
    p.add_argument("--steps", type=int, default=1500, help="classifier step budget")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--eval-every", type=int, default=25, help="steps between val checks (~3 epochs of 546)")
    p.add_argument("--patience", type=int, default=8, help="val checks without improvement before stopping")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--select", action="store_true", help="val split only: print val AUC, never score the test split")
    p.add_argument("--out", type=Path, default=OUT, help="results file (not written with --select)")
    p.add_argument("--dry-run", action="store_true", help="print the resolved settings and exit")
    args = p.parse_args(argv)
    lists = (("--classifiers", args.classifiers, CLASSIFIERS), ("--augments", args.augments, AUGMENTS))
    for flag, value, known in lists:
        unknown = sorted(set(value.split(",")) - set(known))
        if unknown:
            p.error(f"{flag}: unknown {unknown}; choose from {sorted(known)}")
    if args.seeds < 1 or args.steps < 1 or args.eval_every < 1 or args.patience < 1:
        p.error("--seeds, --steps, --eval-every and --patience must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    loop = {
        "steps": args.steps, "batch_size": args.batch_size, "eval_every": args.eval_every, "patience": args.patience,
    }
    grid = {
        (c, a): (dataclasses.replace(CLASSIFIERS[c], **loop), AUGMENTS[a])
        for c in args.classifiers.split(",") for a in args.augments.split(",")
    }
    settings = {
        f"{c}/{a}": {"classifier": cfg.to_dict(), "augment": aug.to_dict()} for (c, a), (cfg, aug) in grid.items()
    }
    info = machine()
    print_machine(info)
    print(json.dumps({"seeds": list(range(args.seeds)), "select_on_val_only": args.select}, indent=None), flush=True)
    for name, s in settings.items():
        print(f"{name}: {s}", flush=True)
    if args.dry_run:
        return 0
    splits = load_splits(args.data)
    # Cells already in the results file are kept (runs on a shared machine go one cell at a time).
    previous = json.loads(args.out.read_text()) if args.out.exists() and not args.select else {}
    results = {
        "protocol": __doc__.split("\n\n")[1],
        "machine": {**previous.get("machine", {}), ",".join(f"{c}/{a}" for c, a in grid): info},
        "settings": {**previous.get("settings", {}), **settings},
        "runs": previous.get("runs", {}), "table": previous.get("table", {}),
        "wall_seconds": previous.get("wall_seconds", {}),
    }
    start = time.perf_counter()
    for (c, a), (cfg, aug) in grid.items():
        rows = []
        for seed in range(args.seeds):
            row = run_one(cfg, aug, splits, seed, score_test=not args.select)
            rows.append(row)
            shown = {k: v for k, v in row.items() if k != "test"}
            print(f"{c}/{a} {shown}", flush=True)
            results["runs"][f"{c}/{a}"] = rows
            cell = {"val_auc": summary(rows, "val_auc"), "best_step": summary(rows, "best_step")}
            if not args.select:
                cell["test_auc"] = summary(rows, "test_auc")
            results["table"][f"{c}/{a}"] = cell
            if not args.select:  # written after every run, so an interrupted run keeps what it measured
                results["wall_seconds"][f"{c}/{a}"] = round(sum(r["seconds"] for r in rows), 1)
                args.out.write_text(json.dumps(results, indent=2) + "\n")
    print("\nclassifier/augment   " + ("val AUC" if args.select else "test AUC (mean +- sd)   val AUC"), flush=True)
    for name, cell in sorted(results["table"].items()):
        line = f"{name:20s} "
        if not args.select:
            line += f"{cell['test_auc']['mean']:.3f} +- {cell['test_auc']['sd']:.3f}        "
        print(line + f"{cell['val_auc']['mean']:.3f} +- {cell['val_auc']['sd']:.3f}", flush=True)
    print(f"wall {time.perf_counter() - start:.0f} s" + ("" if args.select else f"; written to {args.out}"), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
