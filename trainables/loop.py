"""The plumbing every training loop shares, GANs and classifiers alike: the progress callback,
the divergence error, shuffled on-device batches, the report schedule and on-device running
means. Loops import neither Ray nor MLflow; the trainable adapts `Report` to them."""

from __future__ import annotations

import math
from typing import Callable, Protocol

import torch

Report = Callable[[int, dict[str, float]], None]
"""A training loop's progress callback: (step, flat float metrics). Loops import neither Ray
nor MLflow; the trainable adapts this callback to them."""


class DivergedError(RuntimeError):
    """A GAN or classifier loss became NaN or infinite; the trial fails with this reason and the
    search goes on."""


class StepBudget(Protocol):
    """What `report_due` reads of a loop's config (GANConfig, RefinerConfig...)."""

    steps: int
    log_every: int


def real_batches(images: torch.Tensor, batch_size: int, generator: torch.Generator, labels: torch.Tensor | None = None):
    """Endless shuffled batches drawn on the images' device (no DataLoader, no host copies);
    (images, labels) pairs when `labels` is given (a class-conditional GAN)."""
    n = len(images)
    batch_size = min(batch_size, n)
    while True:
        order = torch.randperm(n, generator=generator, device=generator.device)
        for start in range(0, n - batch_size + 1, batch_size):
            idx = order[start : start + batch_size]
            yield images[idx] if labels is None else (images[idx], labels[idx])


def report_due(step: int, cfg: StepBudget) -> bool:
    """Whether a loop reports at this step: every cfg.log_every steps and at the last one."""
    return step % cfg.log_every == 0 or step == cfg.steps


class RunningMeans:
    """Accumulates per-step losses where they live and flushes their means into a history at
    every report: one host sync per report instead of one per loss per step (on a GPU each sync
    drains the kernel queue). A NaN or inf loss poisons its sum, so `flush` still catches a
    diverging loop, at the next report."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor | float] = {}
        self.count = 0
        self.history: dict[str, list[float]] = {}

    def add(self, **values: torch.Tensor | float) -> None:
        for k, v in values.items():
            v = v.detach().float() if isinstance(v, torch.Tensor) else float(v)
            self.sums[k] = self.sums[k] + v if k in self.sums else v
        self.count += 1

    def flush(self, step: int) -> dict[str, float]:
        """Means since the last flush; DivergedError names the first non-finite one."""
        on_device = {k: v for k, v in self.sums.items() if isinstance(v, torch.Tensor)}
        synced = dict(zip(on_device, torch.stack(list(on_device.values())).tolist())) if on_device else {}
        means = {k: synced.get(k, v) / max(self.count, 1) for k, v in self.sums.items()}
        for k, v in means.items():
            if not math.isfinite(v):
                raise DivergedError(f"{k} became {v} by step {step}; lower the learning rate")
            self.history.setdefault(k, []).append(v)
        self.sums, self.count = {}, 0
        return means
