"""Benchmark 5 (GPU only): aggregate DCGAN training throughput with 1, 2 and 4 trial processes
packed on one GPU, each capped to its share of the memory as `--gpus-per-trial 1/k` does
(pipeline.trial_device), against one trial alone."""

from __future__ import annotations

import time
from dataclasses import replace

import torch
import torch.multiprocessing as mp

from .gan_paths import DEMO_GAN

PACKINGS = (1, 2, 4)


def _trial(share: float, images: torch.Tensor, steps: int, barrier, out) -> None:
    """One packed 'trial': a process of its own, like a Ray trial actor."""
    from gantune.trainables.gans.dcgan import fit_dcgan
    from gantune.trainables.pipeline import trial_device

    device = trial_device(share, ["0"])  # as if Ray had assigned GPU 0 to this trial
    images = images.to(device)
    fit_dcgan(replace(DEMO_GAN, steps=10), images, seed=0, device=device)  # warm-up: context, kernels
    barrier.wait()
    start = time.perf_counter()
    fit_dcgan(replace(DEMO_GAN, steps=steps), images, seed=0, device=device)
    torch.cuda.synchronize()
    out.put((start, time.perf_counter()))


def aggregate_images_per_s(k: int, images: torch.Tensor, steps: int) -> float:
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(k), ctx.Queue()
    procs = [
        ctx.Process(target=_trial, args=(1.0 / k if k > 1 else 1.0, images, steps, barrier, out)) for _ in range(k)
    ]
    for p in procs:
        p.start()
    spans = [out.get() for _ in procs]
    for p in procs:
        p.join()
    wall = max(end for _, end in spans) - min(start for start, _ in spans)
    return k * steps * min(DEMO_GAN.batch_size, len(images)) / wall


def gpu_packing(images: torch.Tensor, *, steps: int) -> dict | None:
    """{"gpu_packing": {"2": x, "4": y}} (aggregate img/s ÷ one trial's), or None without CUDA."""
    if not torch.cuda.is_available():
        return None
    per_s = {k: aggregate_images_per_s(k, images.cpu(), steps) for k in PACKINGS}
    return {
        "gpu_packing": {str(k): per_s[k] / per_s[1] for k in PACKINGS if k > 1},
        "images_per_s": {str(k): v for k, v in per_s.items()},
        "gpu": torch.cuda.get_device_name(0),
        "steps": steps,
    }
