"""Real CUDA tests of the worker side (marker `gpu`; skipped on the CPU). They run on a GPU node's
own PyTorch without Ray, MLflow, Optuna, SimpleITK or MONAI: `benchmarks/gpu_check.sh` runs them
with `pytest -m gpu tests/trainables/test_gpu.py`. Everything else about these paths is tested on
the CPU with CUDA simulated (test_trial_device.py, test_runtime.py)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # benchmarks/ is a folder of the repository, not of the package
sys.path.insert(0, str(Path(__file__).parent / "gans"))  # test_egan's deep-copy reference

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: run on a GPU node (benchmarks/gpu_check.sh)"),
]
CUDA = torch.device("cuda", 0)


@pytest.fixture(scope="module")
def images(small_pool):
    return small_pool.images.to(CUDA), small_pool.labels.to(CUDA)  # 80 real BreastMNIST images


def test_a_classifier_step_under_bf16_autocast_and_channels_last_matches_fp32(images):
    from gantune.trainables.classifiers import ClassifierConfig, fit_classifier, predict_proba
    from gantune.trainables.runtime import RuntimeConfig, autocast

    x, y = images
    cfg = ClassifierConfig(name="cnn_bn", optimizer="adam", lr=1e-3, batch_size=64, steps=1, width=1.0)
    torch.backends.cudnn.allow_tf32 = False  # the reference is true fp32 (cuDNN's default is TF32)
    try:
        plain = fit_classifier(cfg, x, y, None, None, 2, seed=0, runtime=None)
        fast = fit_classifier(cfg, x, y, None, None, 2, seed=0, runtime=RuntimeConfig(amp=True, channels_last=True))
    finally:
        torch.backends.cudnn.allow_tf32 = True
    convs = [m.weight for m in fast.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    with autocast(RuntimeConfig(), CUDA):
        assert fast(x[:4]).dtype == torch.bfloat16  # autocast really ran the step in bf16
    # One Adam step from the same initial weights on the same batch: the weights and the
    # predictions agree within bf16's precision (8-bit mantissa: ~0.4 % per operation).
    for a, b in zip(plain.state_dict().values(), fast.state_dict().values()):
        if a.is_floating_point():
            torch.testing.assert_close(b.float(), a.float(), atol=2.5e-3, rtol=0.0)
    torch.testing.assert_close(predict_proba(fast, x), predict_proba(plain, x), atol=2e-2, rtol=0.0)


def test_four_packed_trials_each_stay_under_their_memory_cap():
    from benchmarks.gpu_check import packed_trials

    runs = packed_trials(4, steps=30, probe_over_cap=True)
    total = torch.cuda.get_device_properties(0).total_memory
    assert len(runs) == 4 and len({r["pid"] for r in runs}) == 4
    starts, ends = [r["start"] for r in runs], [r["end"] for r in runs]
    assert max(starts) < min(ends)  # all four ran at once
    for r in runs:
        assert r["cap_fraction"] == pytest.approx(0.25)
        assert r["peak_reserved"] <= 0.25 * total
        assert r["over_cap_refused"], r  # the cap is in force: a larger allocation raises OutOfMemoryError
        assert math.isfinite(r["last_loss_d"])


def test_a_generator_cached_on_the_gpu_is_a_hit_with_the_same_samples(images, tmp_path):
    from gantune.trainables.gans.base import GANConfig
    from gantune.trainables.gans.cache import CacheStats, GeneratorCache, cached_fit
    from gantune.trainables.gans.dcgan import fit_dcgan

    x, _ = images
    cfg = GANConfig(family="dcgan", latent_dim=32, width=32, batch_size=32, steps=20)
    cache, stats = GeneratorCache(str(tmp_path / "cache")), CacheStats()
    trained = cached_fit(cache, stats, lambda: fit_dcgan(cfg, x, seed=0, device=CUDA), CUDA, cfg, x, 0, 1)

    def must_not_train():
        raise AssertionError("a cache hit trained again")

    again = cached_fit(cache, stats, must_not_train, CUDA, cfg, x, 0, 1)
    assert (stats.misses, stats.hits) == (1, 1)
    assert next(again.generator.parameters()).device == CUDA
    torch.testing.assert_close(again.sample(16, seed=5), trained.sample(16, seed=5), atol=0, rtol=0)


def test_egan_children_on_the_gpu_match_the_deep_copy_reference():
    import numpy as np
    from test_egan import assert_same_state, reference_children, run_evolution_step

    from gantune.trainables.gans.base import GANConfig
    from gantune.trainables.gans.egan import Evolution, child_fitness, d_loss_grads, fit_egan

    torch.manual_seed(3)
    g = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Tanh()).to(CUDA)
    d = torch.nn.Linear(4, 1).to(CUDA)
    opt = torch.optim.Adam(g.parameters(), lr=0.05, betas=(0.5, 0.999))
    gen = torch.Generator(CUDA).manual_seed(4)
    z, z_eval, real = (torch.randn(8, n, generator=gen, device=CUDA) for n in (3, 3, 4))
    evolution, real_grads = Evolution(g, opt), d_loss_grads(d, real, 1.0)

    def score(child):
        with torch.no_grad():
            fake = child(z_eval)
        return child_fitness(d, fake, real_grads, gamma=0.5)

    for _ in range(2):  # the second generation starts from a non-trivial Adam state
        reference = reference_children(g, opt, d, z, score)
        chosen = run_evolution_step(evolution, g, d, z, score)
        assert chosen.index == int(np.argmax([r[2].total for r in reference]))
        child, child_opt, _ = reference[chosen.index]
        assert_same_state(g, opt, child, child_opt)
    # The whole loop on the GPU: finite losses, one child chosen per iteration.
    cfg = GANConfig(family="egan", latent_dim=32, width=32, batch_size=32, steps=20, log_every=5)
    gan = fit_egan(cfg, real_images(), seed=0, device=CUDA)
    shares = [k for k in gan.history if k.startswith("egan_share_")]
    assert len(shares) == 3 and all(math.isfinite(v) for k in ("loss_d", "loss_g") for v in gan.history[k])
    assert sum(gan.history[k][-1] for k in shares) == pytest.approx(1.0)


def real_images() -> torch.Tensor:
    from gantune.trainables.data.datasets import load_medmnist_npz

    return load_medmnist_npz(ROOT / "data" / "breastmnist.npz").pool.images[:64].to(CUDA)


def test_generate_samples_a_generator_trained_on_the_gpu(images, tmp_path):
    from gantune.search.generate import sample_classes
    from gantune.trainables.gans import generator_checkpoint, load_generators
    from gantune.trainables.gans.base import GANConfig
    from gantune.trainables.gans.dcgan import fit_dcgan

    x, y = images
    cfg = GANConfig(family="dcgan", latent_dim=32, width=32, batch_size=32, steps=20, conditional=True)
    gan = fit_dcgan(cfg, x, seed=0, device=CUDA, labels=y, num_classes=2)
    path = tmp_path / "generator.pt"
    torch.save(generator_checkpoint({c: gan.for_class(c) for c in (0, 1)}, ("malignant", "benign")), path)
    samples = sample_classes(path, num=24, seed=0)  # as `gantune generate` does: on the CPU
    assert sorted(samples.images) == [0, 1]
    for batch in samples.images.values():
        assert batch.shape == (24, 1, 28, 28) and batch.min() >= -1.0 and batch.max() <= 1.0
    on_gpu = load_generators(str(path), device=CUDA)  # and on the GPU, from the same file
    drawn = {c: g.sample(24, seed=0).cpu() for c, g in on_gpu.items()}
    for c, batch in samples.images.items():  # same weights and seed; only the device's RNG differs
        assert drawn[c].shape == batch.shape and torch.isfinite(drawn[c]).all()
    assert not torch.equal(drawn[0], drawn[1])  # one seed, two classes: each class its own images
