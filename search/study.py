"""The data-efficiency study of `gantune evaluate --train-fraction F,... --draws K --seeds N`.

At each train fraction f < 1, K independent stratified subsamples ("draws") of the refit's
training images; at f = 1 every draw holds all of them, so draws differ only in the generator's
seed. Each draw trains its generator(s) once (seed = the draw's index; the generator cache keeps
them, so the N classifier seeds reuse them) and every method is refitted with the same N seeds, so
(draw, seed) pairs the methods. Per fraction, the chosen configuration (best_config) is compared
with the strongest baseline *at that fraction* (highest mean test AUC over draws and seeds) by the
mean paired AUC difference and a hierarchical bootstrap interval (draws, then seeds within draws,
then test images: `stats.hierarchical_bootstrap`)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import stats

BOOTSTRAP_REPLICATES = 2000
BOOTSTRAP_SEED = 0
DRAW_SEED_STRIDE = 7919
"""Draw d of a fraction subsamples with seed data.seed + 7919 d (draw 0: data.seed, the subset
earlier versions used)."""


@dataclass(frozen=True)
class Unit:
    """One paired refit slot: the same training images and seeds for every method."""

    draw: int
    seed: int

    @property
    def label(self) -> str:
        return f"d{self.draw}s{self.seed}"


def units(draws: int, seeds: list[int]) -> list[Unit]:
    """Draw-major order: the refits of draw 0 (every seed), then draw 1, ..."""
    return [Unit(d, s) for d in range(draws) for s in seeds]


def draw_subset(train_idx: np.ndarray, labels: np.ndarray, fraction: float, data_seed: int, draw: int) -> np.ndarray:
    """Stratified subset of train_idx for one draw: per class, the first ceil(fraction * n_c) (at
    least 2) of one permutation seeded by data_seed + 7919 draw, so within a draw the 0.25 subset
    lies inside the 0.5 one, and every method and seed of the draw sees the same images."""
    if fraction >= 1:
        return train_idx
    rng = np.random.default_rng(data_seed + DRAW_SEED_STRIDE * draw)
    y = labels[train_idx]
    keep = [
        rng.permutation(np.flatnonzero(y == c))[: max(2, math.ceil(fraction * np.sum(y == c)))]
        for c in np.unique(y)
    ]
    return np.sort(train_idx[np.concatenate(keep)])


@dataclass
class MethodRuns:
    """One method's refits at one train fraction, one entry per Unit (draw-major)."""

    metrics: list[dict[str, float]] = field(default_factory=list)
    proba: list[np.ndarray] = field(default_factory=list)
    """(N_test, K) class probabilities per unit."""


def fraction_key(fraction: float) -> str:
    """0.25 -> '0.25', 1.0 -> '1': the <f> of the frac_<f>_* metric names."""
    return f"{fraction:g}"


@dataclass(frozen=True)
class FractionResult:
    """best_config against the strongest baseline at one train fraction."""

    fraction: float
    train_images: int
    """Real training images of each draw."""
    baseline: str
    delta: float
    """Mean over draws and seeds of the paired test-AUC difference."""
    low: float
    high: float
    aucs: dict[str, tuple[float, float]]
    """method -> (mean, sd) of test AUC over draws and seeds."""

    def verdict(self, mde: float) -> str:
        if self.low > 0:
            return "gain shown"
        if self.high < 0:
            return "loss shown"
        if abs(self.delta) < mde:
            return f"underpowered (|delta| {abs(self.delta):.3f} < mde_auc {mde:.3f})"
        return "not shown"

    def metrics(self) -> dict[str, float]:
        f = fraction_key(self.fraction)
        return {f"frac_{f}_delta_auc": self.delta, f"frac_{f}_delta_auc_lo": self.low,
                f"frac_{f}_delta_auc_hi": self.high, f"frac_{f}_train_images": float(self.train_images)}


AucOf = Callable[[np.ndarray, np.ndarray], float]


def compare_fraction(
    fraction: float, train_images: int, by_method: dict[str, MethodRuns], baselines: list[str], labels: np.ndarray,
    draws: int, auc_of: AucOf, n_boot: int = BOOTSTRAP_REPLICATES,
) -> FractionResult:
    """best_config vs the baseline with the highest mean test AUC at this fraction."""
    aucs = {m: stats.mean_sd([r["auc"] for r in runs.metrics]) for m, runs in by_method.items()}
    strongest = max(baselines, key=lambda b: aucs[b][0])

    def grid(method: str) -> np.ndarray:  # (D, S, N_test, K)
        proba = np.stack(by_method[method].proba)
        return proba.reshape(draws, len(proba) // draws, *proba.shape[1:])

    boot = stats.hierarchical_bootstrap(labels, grid("best_config"), grid(strongest), auc_of, n_boot, BOOTSTRAP_SEED)
    return FractionResult(fraction, train_images, strongest, boot.delta, boot.low, boot.high, aucs)


def study_rows(results: list[FractionResult], mde: float) -> list[dict]:
    """One row per fraction for the terminal table and data_efficiency.csv."""
    rows = []
    for r in results:
        row = {"fraction": fraction_key(r.fraction), "train_images": r.train_images}
        row.update({f"auc_{m}": f"{mean:.4f} ± {sd:.4f}" if math.isfinite(sd) else f"{mean:.4f}"
                    for m, (mean, sd) in r.aucs.items()})
        row.update({"baseline": r.baseline, "delta_auc": f"{r.delta:+.4f}",
                    "interval": f"[{r.low:+.4f}, {r.high:+.4f}]", "verdict": r.verdict(mde)})
        rows.append(row)
    return rows


def study_plot(results: list[FractionResult], path: Path, title: str) -> Path:
    """Left: test AUC per method against real training images (mean ± sd over draws and seeds).
    Right: best_config minus the strongest baseline with its hierarchical 95 % interval band."""
    from .plots import pyplot

    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    x = [r.train_images for r in results]
    for method in results[0].aucs:
        mean = np.array([r.aucs[method][0] for r in results])
        sd = np.nan_to_num(np.array([r.aucs[method][1] for r in results]))
        label = f"{method} (with synthetic images)" if method == "best_config" else method
        left.plot(x, mean, marker="o", lw=2 if method == "best_config" else 1, label=label)
        left.fill_between(x, mean - sd, mean + sd, alpha=0.12)
    left.set_xlabel("real training images")
    left.set_ylabel("test AUC (mean ± sd, draws x seeds)")
    left.legend(fontsize=8, loc="lower right")
    left.grid(alpha=0.3)
    delta = np.array([r.delta for r in results])
    right.plot(x, delta, marker="o", color="C0", lw=2, label="best_config - strongest baseline")
    right.fill_between(x, [r.low for r in results], [r.high for r in results], color="C0", alpha=0.2,
                       label="95 % interval (draws, seeds, test images)")
    right.axhline(0, color="k", lw=0.8)
    for r in results:
        right.annotate(r.baseline, (r.train_images, r.high), textcoords="offset points", xytext=(0, 4),
                       ha="center", fontsize=7)
    right.set_xlabel("real training images")
    right.set_ylabel("paired test AUC difference")
    right.legend(fontsize=8, loc="lower right")
    right.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
