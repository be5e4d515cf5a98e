"""What synth.gen_metrics costs per fold: one fold of a space's configuration, timed without the
generative metrics (GAN training, sampling, classifier, scoring) and then the metrics alone (the
real-only feature classifier, features, FD ratio, PRDC, memorisation, the TSTR classifier), in CPU
seconds of this process. Run: python -m benchmarks.gen_metrics_cost [SPACE] [KEY=VALUE ...]
(searched keys are set at their neutral value unless given)."""

from __future__ import annotations

import json
import sys
import time

import torch

from gantune.search.space import load_space, neutral_value
from gantune.trainables import trial
from gantune.trainables.config import TrialConfig
from gantune.trainables.data.datasets import ImageDataset, load_medmnist_npz
from gantune.trainables.data.enhance import enhance
from gantune.trainables.generative_metrics import RealReferenceCache


def cpu_seconds() -> float:
    return time.process_time()


def space_config(space_path: str, overrides: dict) -> TrialConfig:
    """A space's fixed values, its searched keys at their neutral value, then `overrides`."""
    space = load_space(space_path)
    point = {key: neutral_value(domain) for key, domain in space.domains.items()}
    return TrialConfig.from_flat({**space.fixed, **point, **overrides})


def fold_data(cfg: TrialConfig, fold_index: int, device: torch.device) -> tuple[ImageDataset, trial.Fold]:
    """The enhanced pool on `device` and one fold of the trial's split, as run_trial prepares them."""
    data = load_medmnist_npz(cfg.data.path)
    pool = data.pool.to(device)
    pool = ImageDataset(enhance(pool.images, cfg.enhance), pool.labels, pool.class_names, pool.source)
    return pool, trial.trial_folds(cfg, data)[fold_index]


def measure(space_path: str, overrides: dict, fold_index: int = 0) -> dict:
    cfg = space_config(space_path, {**overrides, "synth.gen_metrics": True})
    device = torch.device("cpu")
    pool, fold = fold_data(cfg, fold_index, device)
    gan_seconds, make_synthetic = [0.0], trial.make_synthetic

    def timed_make_synthetic(*args, **kwargs):  # the GAN part of the fold: what a cache hit skips
        begin = cpu_seconds()
        try:
            return make_synthetic(*args, **kwargs)
        finally:
            gan_seconds[0] += cpu_seconds() - begin

    trial.make_synthetic = timed_make_synthetic
    start = cpu_seconds()
    try:
        result = trial.run_fold(cfg, pool, fold, device, references=None)
    finally:
        trial.make_synthetic = make_synthetic
    fold_seconds = cpu_seconds() - start
    train, val = fold.train_view(pool), fold.val_view(pool)
    start = cpu_seconds()
    metrics = trial.fold_generative_metrics(cfg, RealReferenceCache(), fold.index, train, val, result.synthetic,
                                            trial.fold_seed(cfg, fold))
    gen_seconds = cpu_seconds() - start
    return {
        "space": space_path, "overrides": overrides, "fold": fold_index,
        "synthetic_images": len(result.synthetic.images) if result.synthetic.images is not None else 0,
        "fold_cpu_seconds_without_metrics": round(fold_seconds, 1),
        "gan_and_sampling_cpu_seconds": round(gan_seconds[0], 1),
        "gen_metrics_cpu_seconds": round(gen_seconds, 1),
        "cost_ratio": round(gen_seconds / fold_seconds, 3),
        "cost_ratio_gan_cached": round(gen_seconds / max(fold_seconds - gan_seconds[0], 1e-9), 3),
        "val_auc": round(result.metrics["auc"], 4),
        **{k: round(v, 4) for k, v in metrics.items()},
    }


def main(argv: list[str]) -> None:
    torch.set_num_threads(1)  # CPU seconds of one thread: comparable on a shared machine
    space = argv[0] if argv else "spaces/breastmnist.yaml"
    overrides = {}
    for item in argv[1:]:
        key, _, value = item.partition("=")
        overrides[key] = json.loads(value) if value[:1] in "0123456789-[{tf" else value
    print(json.dumps(measure(space, overrides), indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
