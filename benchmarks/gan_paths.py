"""Benchmarks 1 and 2: gantune's GAN data path against the papers' per-sample DataLoader, and an
E-GAN iteration against a DCGAN iteration with the same networks.

Both baselines are written here, not imported: the naive loop is what the papers' Keras/PyTorch
code does (a Dataset that converts and normalises one image at a time on the CPU, a DataLoader
collating the batch, a host->device copy per step), feeding the very same G/D networks, losses and
Adam settings as gantune's `fit_dcgan`, which shuffles and slices one tensor on the device."""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from gantune.trainables.gans.base import GANConfig, normal_latent
from gantune.trainables.gans.dcgan import adam, build_dcgan_pair, dcgan_step, fit_dcgan
from gantune.trainables.gans.egan import fit_egan

from .common import median_seconds

DEMO_GAN = GANConfig(latent_dim=64, width=32, batch_size=64, lr=2e-4, log_every=10_000)
"""The demo space's DCGAN (spaces/demo.yaml) with the larger of its two batch sizes."""


def paper_transform(image: Image.Image, size: int) -> torch.Tensor:
    """One image as the papers' input pipelines prepare it, per sample and per epoch: resize,
    float in [0, 1], normalise to [-1, 1] (torchvision's Resize/ToTensor/Normalize)."""
    image = image.resize((size, size), Image.BILINEAR)
    x = np.asarray(image, dtype=np.float32) / 255.0
    return torch.from_numpy((x - 0.5) / 0.5)[None]  # (1, H, W)


class PngFolder(Dataset):
    """The papers' PyTorch code (ImageFolder): decode one PNG file per __getitem__ call."""

    def __init__(self, files: list[Path], size: int) -> None:
        self.files, self.size = files, size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        with Image.open(self.files[i]) as image:
            return paper_transform(image.convert("L"), self.size)


class InMemoryPerSample(Dataset):
    """A kinder baseline: the uint8 images already in memory, still transformed one at a time."""

    def __init__(self, images_uint8: np.ndarray, size: int) -> None:
        self.images, self.size = images_uint8, size  # (N, H, W)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return paper_transform(Image.fromarray(self.images[i]), self.size)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, 1, H, W) in [-1, 1] -> (N, H, W) uint8: the files the naive pipeline would read."""
    return ((images[:, 0] + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).cpu().numpy()


def write_pngs(images_uint8: np.ndarray, folder: Path) -> list[Path]:
    files = [folder / f"{i:05d}.png" for i in range(len(images_uint8))]
    for image, path in zip(images_uint8, files):
        Image.fromarray(image).save(path)
    return files


def naive_dcgan(cfg: GANConfig, dataset: Dataset, *, steps: int, seed: int, device: torch.device):
    """The baseline loop: DataLoader batches, copied to the device each step, then the same D and
    G steps as fit_dcgan. Returns (generator, discriminator, [(loss_d, loss_g) per step])."""
    torch.manual_seed(seed)
    rng = torch.Generator(device).manual_seed(seed)
    channels, size = dataset[0].shape[0], dataset[0].shape[-1]
    generator, discriminator = build_dcgan_pair(cfg, (channels, size, size), device)
    latent = normal_latent(cfg.latent_dim)
    opt_g, opt_d = adam(generator.parameters(), cfg), adam(discriminator.parameters(), cfg)
    loader = DataLoader(
        dataset, batch_size=min(cfg.batch_size, len(dataset)), shuffle=True, drop_last=True,
        num_workers=0, generator=torch.Generator().manual_seed(seed),
    )
    losses, batches = [], iter(loader)
    generator.train(), discriminator.train()
    for _ in range(steps):
        try:
            real = next(batches)
        except StopIteration:  # a new epoch
            batches = iter(loader)
            real = next(batches)
        real = real.to(device)
        loss_d, loss_g, _ = dcgan_step(generator, discriminator, opt_g, opt_d, real, latent(len(real), rng, device))
        losses.append((loss_d.item(), loss_g.item()))  # the papers log every step
    return generator, discriminator, losses


def data_path_speedup(images: torch.Tensor, *, steps: int, repeats: int, device: torch.device) -> dict:
    """Benchmark 1: images/s of fit_dcgan on an on-device tensor ÷ images/s of the naive loop
    reading PNG files (the papers' pipeline); the in-memory per-sample variant is reported too."""
    cfg = replace(DEMO_GAN, steps=steps)
    images = images.to(device)
    batch, size = min(cfg.batch_size, len(images)), images.shape[-1]
    with tempfile.TemporaryDirectory() as folder:
        files = write_pngs(to_uint8(images), Path(folder))
        runs = {
            "gantune": lambda: fit_dcgan(cfg, images, seed=0, device=device),
            "naive_png": lambda: naive_dcgan(cfg, PngFolder(files, size), steps=steps, seed=0, device=device),
            "naive_in_memory": lambda: naive_dcgan(
                cfg, InMemoryPerSample(to_uint8(images), size), steps=steps, seed=0, device=device
            ),
        }
        seconds = {name: median_seconds(run, repeats) for name, run in runs.items()}
    per_s = {name: steps * batch / median for name, (median, _) in seconds.items()}
    return {
        "data_path_speedup": per_s["gantune"] / per_s["naive_png"],
        "data_path_speedup_vs_in_memory": per_s["gantune"] / per_s["naive_in_memory"],
        **{f"{name}_images_per_s": v for name, v in per_s.items()},
        **{f"{name}_seconds": all_runs for name, (_, all_runs) in seconds.items()},
        "steps": steps,
        "batch_size": batch,
        "images": len(images),
        "image_shape": list(images.shape[1:]),
    }


def egan_over_dcgan(images: torch.Tensor, *, steps: int, repeats: int, device: torch.device) -> dict:
    """Benchmark 2: seconds per E-GAN iteration (3 mutations, 1 D step) ÷ seconds per DCGAN
    iteration, same G, D, batch and data."""
    cfg = replace(DEMO_GAN, steps=steps, family="egan")
    images = images.to(device)
    egan_s, egan_all = median_seconds(lambda: fit_egan(cfg, images, seed=0, device=device), repeats)
    dcgan_s, dcgan_all = median_seconds(lambda: fit_dcgan(cfg, images, seed=0, device=device), repeats)
    return {
        "egan_over_dcgan": egan_s / dcgan_s,
        "egan_ms_per_iteration": 1000 * egan_s / steps,
        "dcgan_ms_per_iteration": 1000 * dcgan_s / steps,
        "egan_seconds": egan_all,
        "dcgan_seconds": dcgan_all,
        "mutations": cfg.mutations,
        "steps": steps,
    }
