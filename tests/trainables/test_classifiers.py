"""Every registered classifier: output shapes at the project's sizes, and a short real training run."""

import pytest
import torch
from monai.networks.nets.resnet import ResNetBottleneck

from gantune.trainables.classifiers import CLASSIFIERS, ClassifierConfig, fit_classifier, predict_proba
from gantune.trainables.data.augment import AugmentConfig, make_augment

SMALL = ClassifierConfig(width=1 / 16, middle_repeats=1)


@pytest.mark.parametrize("name", sorted(CLASSIFIERS))
@pytest.mark.parametrize("size", [28, 64, 80])
@pytest.mark.parametrize("channels", [1, 3])
def test_output_shape(name, size, channels):
    torch.manual_seed(0)
    model = CLASSIFIERS[name](channels, 5, size, SMALL).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, channels, size, size))
    assert logits.shape == (2, 5)
    assert torch.isfinite(logits).all()


def test_resnet50_is_monai_resnet50():
    model = CLASSIFIERS["resnet50"](1, 2, 28, SMALL)
    # ResNet-50: [3, 4, 6, 3] bottleneck blocks, 2D convolutions, 1-channel stem.
    assert sum(isinstance(m, ResNetBottleneck) for m in model.modules()) == 16
    assert isinstance(model.conv1, torch.nn.Conv2d) and model.conv1.in_channels == 1
    # widen_factor follows the width multiplier: 512 * 4 / 16 features into the output layer.
    assert model.fc.in_features == 128


def test_resnet50_rejects_zero_width():
    with pytest.raises(ValueError, match="width"):
        CLASSIFIERS["resnet50"](1, 2, 28, ClassifierConfig(width=0.001))


@pytest.mark.parametrize("name", sorted(CLASSIFIERS))
def test_fit_classifier_few_steps(name):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(24, 1, 28, 28, generator=g) * 2 - 1
    y = torch.arange(24) % 3
    cfg = ClassifierConfig(name=name, width=1 / 16, middle_repeats=1, steps=4, batch_size=8, eval_every=2, lr=1e-3)
    losses: list[dict] = []
    model = fit_classifier(
        cfg, x[:16], y[:16], x[16:], y[16:], 3, seed=0,
        augment=make_augment(AugmentConfig(enabled=True)), report=lambda step, m: losses.append(m),
    )
    assert losses and all(torch.isfinite(torch.tensor(list(m.values()))).all() for m in losses)
    proba = predict_proba(model, x[16:])
    assert proba.shape == (8, 3)
    assert torch.allclose(proba.sum(dim=1), torch.ones(8), atol=1e-5)


def test_a_diverging_classifier_raises_a_named_error():
    from gantune.trainables.gans import DivergedError

    x = torch.rand(16, 1, 28, 28) * 2 - 1
    x[3] = float("nan")  # one broken image poisons the batches that draw it
    y = torch.arange(16) % 2
    cfg = ClassifierConfig(name="cnn", width=1 / 16, steps=6, batch_size=16, eval_every=3, lr=1e-3)
    with pytest.raises(DivergedError, match="classifier loss became nan by step 3"):
        fit_classifier(cfg, x, y, x, y, 2, seed=0)
