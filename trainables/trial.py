"""What one trial computes: for each fold, GAN(s) on the fold's training images only -> synthetic
images at the ratio (score-filtered, optionally refined) -> classifier on real + synthetic ->
metrics on the fold's real held-out images.

Plain PyTorch: `run_trial` takes an `on_fold` callback and imports neither Ray nor MLflow;
trainables/pipeline.py is the thin Ray Tune adapter around it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from .classifiers import fit_classifier, predict_proba
from .config import TrialConfig
from .data.augment import make_augment
from .data.datasets import DataSplits, ImageDataset
from .data.enhance import enhance  # the one enhancement (evaluate imports it from here too)
from .data.folds import Fold, make_folds
from .gans import FILTERS, GANS, REFINERS, TrainedGAN, TrainedRefiner
from .gans.cache import CacheStats, GeneratorCache, cached_fit
from .loop import Report
from .generative_metrics import RealReferenceCache, generative_metrics, tstr_auc
from .metrics import METRIC_NAMES, classification_metrics
from .synth_use import Scorer, fit_scorer, select


@dataclass
class Synthetic:
    """What the generative stages of a trial produced for one training set."""

    gans: dict[int, TrainedGAN] = field(default_factory=dict)
    refiners: dict[int, TrainedRefiner] = field(default_factory=dict)
    images: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    unrefined: torch.Tensor | None = None
    """The same images before refinement (for refined-vs-unrefined grids); None without refiner."""
    kept_fraction: dict[int, float] = field(default_factory=dict)
    """Per class: the share of sampled images the discriminator-score filter kept."""
    history: dict[str, float] = field(default_factory=dict)
    """Last reported training diagnostics of every GAN / refiner, keyed "<name>_c<class>"."""
    cache: CacheStats = field(default_factory=CacheStats)
    """GANs this training set took from the generator cache (hits) or trained (misses)."""
    scorer: Scorer | None = None
    """synth.select: the real-only classifier that accepts or rejects synthetic images."""
    accept_rate: float | None = None
    """synth.select: the share of candidate synthetic images the scorer accepted (None: no selection)."""


@dataclass
class FoldResult:
    fold: int
    metrics: dict[str, float]
    val_labels: np.ndarray
    val_proba: np.ndarray
    synthetic: Synthetic
    synthetic_counts: dict[int, int]
    gen_metrics: dict[str, float] = field(default_factory=dict)
    gan_stats: dict[str, float] = field(default_factory=dict)
    """gan_cache_hits / gan_cache_misses / gan_train_seconds of this fold (kept through restores)."""

    @property
    def gans(self) -> dict[int, TrainedGAN]:
        return self.synthetic.gans


def synthetic_counts(train: ImageDataset, ratio: float | list[float], classes: str = "all") -> dict[int, int]:
    """round(ratio_c x base_c) synthetic images per class; `ratio` is one ratio for every class or
    one per class (SynthConfig.ratios). base_c by `classes`: 'all', the class's real count;
    'minority', the same but 0 for the largest class; 'balance', the class's gap to the largest
    class (ratio 1 fills every class up to the largest)."""
    real = train.class_counts()
    ratios = ratio if isinstance(ratio, list) else [ratio] * len(real)
    largest = max(real)
    if classes == "balance":
        return {c: int(round(r * (largest - n))) for c, (n, r) in enumerate(zip(real, ratios))}
    return {c: int(round(r * n)) if classes == "all" or n < largest else 0
            for c, (n, r) in enumerate(zip(real, ratios))}


def last_values(history: dict[str, list[float]], suffix: str) -> dict[str, float]:
    return {f"{k}_{suffix}": v[-1] for k, v in history.items() if v}


def class_seed(seed: int, label: int) -> int:
    return seed + 1000 * label


def train_gans(cfg: TrialConfig, train: ImageDataset, classes: list[int], device: torch.device, seed: int,
               cache: GeneratorCache | None, stats: CacheStats) -> dict[int, TrainedGAN]:
    """The trial's GAN(s) on the training set only, through the generator cache: one per class
    on that class's images, or one conditional GAN on all of them seen once per class."""
    fit = GANS[cfg.gan.family]
    if cfg.gan.conditional:
        x, y = train.images, train.labels
        def train_conditional() -> TrainedGAN:
            return fit(cfg.gan, x, seed=seed, device=device, labels=y, num_classes=train.num_classes)

        gan = cached_fit(cache, stats, train_conditional, device, cfg.gan, x, seed, "all", y)
        return {c: gan.for_class(c) for c in classes}
    gans = {}
    for c in classes:
        real, s = train.of_class(c), class_seed(seed, c)

        def train_class(real: torch.Tensor = real, s: int = s) -> TrainedGAN:  # bound now: called in this iteration
            return fit(cfg.gan, real, seed=s, device=device)

        gans[c] = cached_fit(cache, stats, train_class, device, cfg.gan, real, s, c)
    return gans


def draw(cfg: TrialConfig, gan: TrainedGAN, n: int, seed: int) -> tuple[torch.Tensor, float | None]:
    """(n images of one class, the share the filter kept (None: no filter)), keeping what the
    discriminator scores >= synth.filter_threshold."""
    if cfg.synth.filter_threshold > 0:
        return FILTERS["d_score"](gan, n, cfg.synth.filter_threshold, seed)
    return gan.sample(n, seed=seed), None


def class_sampler(
    cfg: TrialConfig, gan: TrainedGAN, refiner: TrainedRefiner | None,
) -> Callable[[int, int], torch.Tensor]:
    """(k, seed) -> k fresh images of the GAN's class, score-filtered and refined as the pool's."""

    def produce(k: int, seed: int) -> torch.Tensor:
        fake = draw(cfg, gan, k, seed)[0][:k]
        return refiner.refine(fake) if refiner is not None else fake

    return produce


def make_synthetic(cfg: TrialConfig, train: ImageDataset, counts: dict[int, int], device: torch.device, seed: int,
                   cache: GeneratorCache | None = None, gan_seed: int | None = None) -> Synthetic:
    """Fit the GAN(s) on the training images only (or take them from the cache), sample each
    class's count (score-filtered), refine; with synth.select, keep only what a classifier
    trained on the training images' real images accepts (oversampled to the count). `gan_seed`
    (default `seed`) seeds the GAN training alone, so refits with other classifier seeds can share
    one generator; the selection classifier, a classifier, takes `seed`."""
    out = Synthetic()
    classes = [c for c, n in counts.items() if n > 0]
    out.gans = train_gans(cfg, train, classes, device, seed if gan_seed is None else gan_seed, cache, out.cache)
    if cfg.synth.select != "none":
        out.scorer = fit_scorer(cfg, train, seed)
    images, unrefined, labels = [], [], []
    accepted = drawn = 0.0
    for c in classes:
        gan, n, s = out.gans[c], counts[c], class_seed(seed, c)
        out.history.update(last_values(gan.history, f"c{c}"))
        if cfg.synth.refiner != "none" or out.scorer is None:
            # --- Sample, keeping what the discriminator scores >= threshold ---
            fake, kept = draw(cfg, gan, n, s)
            if kept is not None:
                out.kept_fraction[c] = kept
            # --- Refine (SimGAN) against the same class's real images ---
            if cfg.synth.refiner != "none" and len(fake):
                refiner = REFINERS[cfg.synth.refiner](cfg.refiner, fake, train.of_class(c), seed=s, device=device)
                out.refiners[c] = refiner
                out.history.update(last_values(refiner.history, f"c{c}"))
                unrefined.append(fake)
                fake = refiner.refine(fake)
        if out.scorer is not None:
            # --- Keep what the real-only classifier recognises (the refiner trained on the first draw) ---
            produce = class_sampler(cfg, gan, out.refiners.get(c))
            fake, rate, k = select(produce, out.scorer, c, n, s, cfg.synth.select_rounds)
            accepted, drawn = accepted + rate * k, drawn + k
        images.append(fake)
        labels.append(torch.full((len(fake),), c, dtype=torch.long, device=fake.device))
    out.images, out.labels = torch.cat(images), torch.cat(labels)
    # Selected images are fresh draws, not the refiner's first batch: no unrefined twins for them.
    out.unrefined = torch.cat(unrefined) if unrefined and out.scorer is None else None
    out.accept_rate = accepted / drawn if drawn else None
    return out


def synthetic_stream(cfg: TrialConfig, synthetic: Synthetic, counts: dict[int, int]):
    """synth.mode 'stream': n fresh images per call, classes drawn in proportion to `counts`, each
    class's images filtered, refined and selected as the pool's were; seeds come from the
    classifier's rng."""
    classes = [c for c, n in counts.items() if n > 0]
    share = torch.tensor([counts[c] for c in classes], dtype=torch.float)
    samplers = {c: class_sampler(cfg, synthetic.gans[c], synthetic.refiners.get(c)) for c in classes}

    def stream(n: int, rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        picks = torch.multinomial(share.to(rng.device), n, replacement=True, generator=rng)
        images, labels = [], []
        for i, c in enumerate(classes):
            k = int((picks == i).sum())
            if not k:
                continue
            seed = int(torch.randint(0, 2**62, (1,), generator=rng, device=rng.device))
            if synthetic.scorer is None:
                fake = samplers[c](k, seed)
            else:
                fake = select(samplers[c], synthetic.scorer, c, k, seed, cfg.synth.select_rounds)[0]
            images.append(fake)
            labels.append(torch.full((len(fake),), c, dtype=torch.long, device=fake.device))
        return torch.cat(images), torch.cat(labels)

    return stream


def fit_pipeline(
    cfg: TrialConfig, train: ImageDataset, early_stop: ImageDataset | None, device: torch.device, seed: int,
    gan_cache: GeneratorCache | None = None, report: Report | None = None, gan_seed: int | None = None,
) -> tuple[nn.Module, Synthetic, dict[int, int]]:
    """Everything a trial fits on one training set: GANs (and refiners) on `train` only, then the
    classifier on real + synthetic images, early-stopped on the real `early_stop` images (None:
    the full step budget, last weights). `gan_seed` (default `seed`): see make_synthetic."""
    counts = synthetic_counts(train, cfg.synth.ratios(train.num_classes), cfg.synth.classes)
    total = sum(counts.values())
    synthetic = (make_synthetic(cfg, train, counts, device, seed, gan_cache, gan_seed) if total > 0
                 else Synthetic())
    x, y, extra = train.images, train.labels, {}
    have = synthetic.images is not None
    if have and cfg.synth.use in ("pretrain", "mix+pretrain"):
        extra = {"pretrain": (synthetic.images, synthetic.labels), "pretrain_steps": pretrain_steps(cfg)}
    if have and cfg.synth.use in ("mix", "mix+pretrain") and cfg.synth.mode == "stream":
        extra |= {"stream": synthetic_stream(cfg, synthetic, counts), "stream_share": total / (total + len(train)),
                  "stream_weight": cfg.synth.weight}
    elif have and cfg.synth.use in ("mix", "mix+pretrain"):
        x, y = torch.cat([x, synthetic.images]), torch.cat([y, synthetic.labels])
        if cfg.synth.weight != 1.0:
            extra["weights"] = torch.cat([torch.ones(len(train), device=x.device),
                                          torch.full((len(synthetic.images),), cfg.synth.weight, device=x.device)])
    model = fit_classifier(
        cfg.classifier, x, y, early_stop.images if early_stop else None, early_stop.labels if early_stop else None,
        train.num_classes, seed=seed, augment=make_augment(cfg.augment), runtime=cfg.runtime, report=report, **extra,
    )
    return model, synthetic, counts


def pretrain_steps(cfg: TrialConfig) -> int:
    """Steps of synthetic-only pretraining: synth.pretrain_share of classifier.steps, leaving the
    fine-tuning phase at least one step (the total stays classifier.steps)."""
    return min(int(round(cfg.synth.pretrain_share * cfg.classifier.steps)), cfg.classifier.steps - 1)


def score(model: nn.Module, data: ImageDataset, positive: int) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    """(metrics, labels, probabilities) of a classifier on real images."""
    proba = predict_proba(model, data.images).cpu().numpy()
    labels = data.labels.cpu().numpy()
    return classification_metrics(labels, proba, positive=positive), labels, proba


def fold_seed(cfg: TrialConfig, fold: Fold) -> int:
    return cfg.seed + 7919 * fold.index


class BestStep:
    """A classifier report callback that keeps the step of the lowest validation loss (the
    weights early stopping keeps): `evaluate` trains that many steps where it has no val split."""

    def __init__(self) -> None:
        self.step, self.loss = 0, float("inf")

    def __call__(self, step: int, metrics: dict[str, float]) -> None:
        if metrics["clf_val_loss"] < self.loss - 1e-4:
            self.step, self.loss = step, metrics["clf_val_loss"]


def run_fold(
    cfg: TrialConfig, pool: ImageDataset, fold: Fold, device: torch.device,
    references: RealReferenceCache | None = None, gan_cache: GeneratorCache | None = None,
) -> FoldResult:
    train, val = fold.train_view(pool), fold.val_view(pool)  # the only views this fold may use
    seed = fold_seed(cfg, fold)
    best = BestStep()
    model, synthetic, counts = fit_pipeline(cfg, train, val, device, seed, gan_cache, report=best)
    metrics, labels, proba = score(model, val, cfg.data.positive_class)
    metrics["clf_best_step"] = float(best.step)
    if synthetic.accept_rate is not None:
        metrics["synth_accept_rate"] = synthetic.accept_rate
    result = FoldResult(fold.index, metrics, labels, proba, synthetic, counts, gan_stats=synthetic.cache.as_metrics())
    if references is not None and synthetic.images is not None:
        result.gen_metrics = fold_generative_metrics(cfg, references, fold.index, train, val, synthetic, seed)
    return result


def fold_generative_metrics(cfg, references, fold_index, train, val, synthetic: Synthetic, seed) -> dict[str, float]:
    """Synthetic vs real in the feature space of a classifier trained on the fold's real images
    only, and train-on-synthetic / test-on-real: a classifier on the synthetic images alone,
    early-stopped on a fifth of them held out (never on the real validation images it is scored on)."""

    def real_only_classifier() -> nn.Module:
        return fit_classifier(cfg.classifier, train.images, train.labels, val.images, val.labels, train.num_classes,
                              seed=seed)

    def synthetic_only_classifier(x: torch.Tensor, y: torch.Tensor) -> nn.Module:
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed)).to(x.device)
        held, kept = order[: len(x) // 5], order[len(x) // 5:]
        return fit_classifier(cfg.classifier, x[kept], y[kept], x[held], y[held], train.num_classes, seed=seed)

    reference = references.get(fold_index, train.images, val.images, real_only_classifier)
    metrics = generative_metrics(reference, synthetic.images)
    metrics["gen_tstr_auc"] = tstr_auc(synthetic_only_classifier, predict_proba, synthetic.images, synthetic.labels,
                                       val.images, val.labels, train.num_classes, cfg.data.positive_class)
    return metrics


def trial_folds(cfg: TrialConfig, data: DataSplits) -> list[Fold]:
    """k stratified folds per repeat, repeat r split with seed data.seed + r; fold indices run on
    over the repeats (r * k + i), so fold metrics, seeds and cached references never collide."""
    labels, k = data.pool.labels.cpu().numpy(), cfg.data.folds
    return [
        replace(fold, index=r * k + fold.index)
        for r in range(cfg.data.repeats)
        for fold in make_folds(labels, k, cfg.data.seed + r, groups=data_groups(data))
    ]


def run_trial(
    cfg: TrialConfig, data: DataSplits, device: torch.device, on_fold: Callable[[FoldResult], None] | None = None,
    skip_folds: int = 0, gan_cache: GeneratorCache | None = None,
) -> dict[str, float]:
    """The folds in order, from fold `skip_folds` on (a restored trial has the earlier ones);
    returns the mean metrics over the folds it ran as val_* keys. `gan_cache`: where trained GANs
    are looked up and stored (None: train every GAN)."""
    pool = data.pool.to(device)
    pool = ImageDataset(enhance(pool.images, cfg.enhance), pool.labels, pool.class_names, pool.source)
    references = RealReferenceCache() if cfg.synth.gen_metrics else None
    results = []
    for fold in trial_folds(cfg, data)[skip_folds:]:
        result = run_fold(cfg, pool, fold, device, references, gan_cache)
        results.append(result)
        if on_fold:
            on_fold(result)
    return mean_metrics(results)


def data_groups(data: DataSplits):
    return getattr(data, "groups", None)


def mean_metrics(results: list[FoldResult]) -> dict[str, float]:
    """Means over the folds so far, and each classification metric's worst fold
    (`val_auc_min_fold`...; all are higher-is-better): a mean can hide one collapsed fold."""
    means = {f"val_{m}": float(np.nanmean([r.metrics[m] for r in results])) for m in METRIC_NAMES}
    means.update({f"val_{m}_min_fold": float(np.nanmin([r.metrics[m] for r in results])) for m in METRIC_NAMES})
    with_gen = [r.gen_metrics for r in results if r.gen_metrics]
    for key in with_gen[0] if with_gen else ():
        means[key] = float(np.nanmean([g[key] for g in with_gen]))
    steps = [r.metrics["clf_best_step"] for r in results if "clf_best_step" in r.metrics]
    if steps:
        means["val_clf_best_step"] = float(np.mean(steps))
    rates = [r.metrics["synth_accept_rate"] for r in results if "synth_accept_rate" in r.metrics]
    if rates:
        means["synth_accept_rate"] = float(np.mean(rates))
    return means


def gan_totals(results: list[FoldResult]) -> dict[str, float]:
    """gan_cache_hits / gan_cache_misses / gan_train_seconds summed over the trial's folds."""
    keys = CacheStats().as_metrics()
    return {k: float(sum(r.gan_stats.get(k, 0.0) for r in results)) for k in keys}


FOLDS_JSON, FOLDS_NPZ = "folds.json", "folds.npz"


def save_fold_results(results: list[FoldResult], directory: str) -> None:
    """What a restored trial needs of its finished folds (metrics and out-of-fold predictions;
    not the GANs, whose generator is already logged), as JSON + npz: small, and no pickles."""
    folds = [{"fold": r.fold, "metrics": r.metrics, "gen_metrics": r.gen_metrics, "gan_stats": r.gan_stats,
              "synthetic_counts": {str(c): n for c, n in r.synthetic_counts.items()}} for r in results]
    Path(directory, FOLDS_JSON).write_text(json.dumps({"folds": folds}))
    arrays = {f"{kind}_{i}": a for i, r in enumerate(results)
              for kind, a in (("labels", r.val_labels), ("proba", r.val_proba))}
    np.savez(Path(directory, FOLDS_NPZ), **arrays)


def load_fold_results(directory: str) -> list[FoldResult]:
    folds = json.loads(Path(directory, FOLDS_JSON).read_text())["folds"]
    with np.load(Path(directory, FOLDS_NPZ), allow_pickle=False) as arrays:
        return [
            FoldResult(f["fold"], f["metrics"], arrays[f"labels_{i}"], arrays[f"proba_{i}"], Synthetic(),
                       {int(c): n for c, n in f["synthetic_counts"].items()}, f["gen_metrics"], f.get("gan_stats", {}))
            for i, f in enumerate(folds)
        ]


def fold_metrics(result: FoldResult) -> dict[str, float]:
    return {f"fold{result.fold}_val_{m}": v for m, v in result.metrics.items()}
