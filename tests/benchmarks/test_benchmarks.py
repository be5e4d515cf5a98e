"""The benchmark scripts keep working (no timing is asserted): baseline and gantune paths train
the same networks on the same images with finite losses, and the ratios are computed as
documented."""

from __future__ import annotations

import math
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # benchmarks/ is a folder of the repository, not of the package

from benchmarks.gan_paths import (  # noqa: E402
    DEMO_GAN,
    InMemoryPerSample,
    PngFolder,
    data_path_speedup,
    egan_over_dcgan,
    naive_dcgan,
    to_uint8,
    write_pngs,
)
from benchmarks.gpu_packing import gpu_packing  # noqa: E402
from benchmarks.searches import SearchRun, TrialTimeline, compute_to_reach, search_compute_fraction, tune_overhead  # noqa: E402
from gantune.trainables.gans.dcgan import fit_dcgan  # noqa: E402

CPU = torch.device("cpu")
TINY = replace(DEMO_GAN, batch_size=4, width=16, latent_dim=8, steps=2)


@pytest.fixture(scope="module")
def images(small_pool):
    return small_pool.images[:12]  # (12, 1, 28, 28) real BreastMNIST in [-1, 1]


def test_baseline_datasets_read_the_same_images(images, tmp_path):
    files = write_pngs(to_uint8(images), tmp_path)
    for dataset in (PngFolder(files, 28), InMemoryPerSample(to_uint8(images), 28)):
        got = torch.stack([dataset[i] for i in range(len(dataset))])
        # uint8 quantisation is the only difference: half a grey level in [-1, 1] units
        np.testing.assert_allclose(got.numpy(), images.numpy(), atol=1 / 127.5 + 1e-6)


def test_naive_and_gantune_paths_train_the_same_networks(images, tmp_path):
    dataset = PngFolder(write_pngs(to_uint8(images), tmp_path), 28)
    g_naive, d_naive, losses = naive_dcgan(TINY, dataset, steps=2, seed=0, device=CPU)
    gan = fit_dcgan(replace(TINY, log_every=1), images, seed=0, device=CPU)
    for naive, ours in ((g_naive, gan.generator), (d_naive, gan.discriminator)):
        assert type(naive) is type(ours)
        assert {k: v.shape for k, v in naive.state_dict().items()} == {k: v.shape for k, v in ours.state_dict().items()}
    assert len(losses) == 2 and all(math.isfinite(v) for pair in losses for v in pair)
    assert len(gan.history["loss_d"]) == 2
    assert all(math.isfinite(v) for k in ("loss_d", "loss_g") for v in gan.history[k])


def test_gan_benchmarks_return_finite_ratios(images):
    speed = data_path_speedup(images, steps=2, repeats=1, device=CPU)
    assert speed["data_path_speedup"] > 0 and math.isfinite(speed["data_path_speedup"])
    assert math.isclose(speed["data_path_speedup"], speed["gantune_images_per_s"] / speed["naive_png_images_per_s"])
    egan = egan_over_dcgan(images, steps=2, repeats=1, device=CPU)
    assert egan["egan_over_dcgan"] > 0 and math.isfinite(egan["egan_over_dcgan"])
    assert math.isclose(egan["egan_over_dcgan"], egan["egan_ms_per_iteration"] / egan["dcgan_ms_per_iteration"])


def result(t: float, total: float, step: float, folds: int, auc: float) -> dict:
    return {"timestamp": t, "time_total_s": total, "time_this_iter_s": step, "folds_done": folds, "val_auc": auc}


def test_tune_overhead_formula():
    # Two slots, 130 s wall from t=970: trials of 60 + 80 s inside -> 1 - 140 / 260.
    a = TrialTimeline("a", (result(1010, 30, 30, 1, 0.6), result(1040, 60, 30, 2, 0.7)))  # starts 980
    b = TrialTimeline("b", (result(1090, 80, 80, 2, 0.8),))  # starts 1010, the last to end
    out = tune_overhead(SearchRun(130.0, 970.0, 2, 2, (a, b)))
    assert out["tune_overhead"] == pytest.approx(1 - 140 / 260)
    assert out["startup_seconds"] == pytest.approx(980 - 970)
    assert out["shutdown_seconds"] == pytest.approx(1100 - 1090)


def test_search_compute_fraction_counts_compute_until_the_target():
    random = SearchRun(0, 0, 1, 2, (
        TrialTimeline("r1", (result(10, 5, 5, 1, 0.7), result(20, 10, 5, 2, 0.70)),),
        TrialTimeline("r2", (result(30, 5, 5, 1, 0.8), result(40, 10, 5, 2, 0.75)),),
    ))
    asha = SearchRun(0, 0, 1, 2, (
        TrialTimeline("s1", (result(10, 4, 4, 1, 0.9),)),  # stopped after one fold: cannot reach
        TrialTimeline("s2", (result(20, 3, 3, 1, 0.7), result(30, 6, 3, 2, 0.76))),
        TrialTimeline("s3", (result(40, 9, 9, 2, 0.9),)),
    ))
    assert compute_to_reach(asha, 0.75) == pytest.approx(4 + 6)
    out = search_compute_fraction(asha, random)
    assert out["random_best_val_auc"] == 0.75 and out["reached"]
    assert out["search_compute_fraction"] == pytest.approx(10 / 20)
    assert compute_to_reach(asha, 0.95) is None
    # A random search whose best complete trial (0.95) TPE + ASHA never matches:
    lucky = SearchRun(0, 0, 1, 2, (TrialTimeline("r3", (result(10, 5, 5, 1, 0.9), result(20, 10, 5, 2, 0.95))),))
    missed = search_compute_fraction(asha, lucky)
    assert missed["search_compute_fraction"] is None and not missed["reached"]
    assert missed["asha_total_over_random_total"] == pytest.approx((4 + 6 + 9) / 10)


def test_gpu_packing_skips_without_cuda(images):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    assert gpu_packing(images, steps=1) is None
