"""Classifiers by name, and the step-budgeted training loop with early stopping.

The budget is counted in optimisation steps, not epochs: a trial with 3x more (synthetic) images
must not also get 3x more gradient steps, or its "gain" would just be longer training."""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .loop import DivergedError, Report
from .runtime import RuntimeConfig, autocast, prepare_model
from .xception import Xception


@dataclass(frozen=True)
class ClassifierConfig:
    name: str = "cnn"
    """Registry key (see CLASSIFIERS)."""
    optimizer: str = "rmsprop"
    """'rmsprop' (cardiac papers, lr 1e-4), 'sgd' (eye paper, lr 1e-3) or 'adam'."""
    lr: float = 1e-3
    """Learning rate."""
    batch_size: int = 64
    """Images per step."""
    steps: int = 600
    """Optimisation steps; the same for every trial whatever its synthetic ratio."""
    eval_every: int = 50
    """Steps between validation checks for early stopping."""
    patience: int = 4
    """Validation checks without improvement before stopping."""
    width: float = 1.0
    """Width multiplier of the network (1.0 = the paper's filter counts)."""
    weight_decay: float = 0.0
    """L2 penalty."""
    middle_repeats: int = 8
    """Xception: repeats of the middle-flow block (paper: 8); fewer for CPU runs and tests."""

    def to_dict(self) -> dict:
        return asdict(self)


class SmallCNN(nn.Module):
    """The eye paper's "GMD" network: conv 256, 128 + pool; conv 128, 64, 32 + pool; dense 100, 60."""

    def __init__(self, channels: int, num_classes: int, size: int, width: float = 1.0) -> None:
        super().__init__()

        def w(n: int) -> int:
            return max(8, int(round(n * width)))

        def conv(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(True)]

        self.features = nn.Sequential(
            *conv(channels, w(256)), *conv(w(256), w(128)), nn.MaxPool2d(2),
            *conv(w(128), w(128)), *conv(w(128), w(64)), *conv(w(64), w(32)), nn.MaxPool2d(2),
        )
        flat = w(32) * (size // 4) ** 2
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(flat, 100), nn.ReLU(True), nn.Dropout(0.3),
            nn.Linear(100, 60), nn.ReLU(True), nn.Linear(60, num_classes),
        )

    def forward(self, x):
        return self.head(self.features(x))


class BatchNormCNN(nn.Module):
    """A small normalised CNN: three blocks of two 3x3 conv + BatchNorm + ReLU and a 2x2 max-pool
    (32, 64, 128 channels at width 1), global average pooling, dropout, one linear layer. About
    287k parameters at width 1; with BatchNorm it trains fast and stably on a few hundred images,
    where the unnormalised GMD network needs careful learning rates (issue 14's real-only anchor).
    Global average pooling makes the parameter count independent of the image size."""

    def __init__(self, channels: int, num_classes: int, width: float = 1.0, dropout: float = 0.3) -> None:
        super().__init__()

        def w(n: int) -> int:
            return max(8, int(round(n * width)))

        def block(cin: int, cout: int) -> list[nn.Module]:
            # No conv bias: the BatchNorm shift that follows would cancel it.
            return [
                nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True),
                nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True),
                nn.MaxPool2d(2),
            ]

        self.features = nn.Sequential(*block(channels, w(32)), *block(w(32), w(64)), *block(w(64), w(128)))
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(w(128), num_classes),
        )

    def forward(self, x):
        return self.head(self.features(x))


def build_cnn(channels: int, num_classes: int, size: int, cfg: ClassifierConfig) -> nn.Module:
    return SmallCNN(channels, num_classes, size, cfg.width)


def build_cnn_bn(channels: int, num_classes: int, size: int, cfg: ClassifierConfig) -> nn.Module:
    if size < 8:
        raise ValueError(f"classifier 'cnn_bn' needs images of at least 8 px (three 2x2 pools), got {size}")
    return BatchNormCNN(channels, num_classes, cfg.width)


def _check_resnet_width(name: str, width: float) -> None:
    if int(64 * width) < 1:
        raise ValueError(f"classifier 'width' must be >= 1/64 for {name}, got {width}")


def build_resnet18(channels: int, num_classes: int, size: int, cfg: ClassifierConfig) -> nn.Module:
    """MONAI's 2D ResNet-18 (basic blocks [2, 2, 2, 2]), randomly initialised (nothing is
    downloaded), the MedMNIST v2 benchmark's network (0.901 test AUC on BreastMNIST at 28 px).
    Stem and width as for resnet50 below."""
    from monai.networks.nets import resnet18  # here: a GPU node's own PyTorch may come without MONAI

    _check_resnet_width("resnet18", cfg.width)
    del size  # global average pooling
    return resnet18(
        pretrained=False, spatial_dims=2, n_input_channels=channels, num_classes=num_classes,
        widen_factor=cfg.width,
    )


def build_resnet50(channels: int, num_classes: int, size: int, cfg: ClassifierConfig) -> nn.Module:
    """MONAI's 2D ResNet-50, randomly initialised (nothing is downloaded). MONAI's stem keeps
    stride 1 before its max-pool, so 28 px inputs end at 2 px and 80 px at 5 px instead of
    vanishing; `width` becomes MONAI's widen_factor (1.0 = 64..512 bottleneck planes)."""
    from monai.networks.nets import resnet50

    _check_resnet_width("resnet50", cfg.width)
    del size  # global average pooling: any input size >= 16 px works
    return resnet50(
        pretrained=False, spatial_dims=2, n_input_channels=channels, num_classes=num_classes,
        widen_factor=cfg.width,
    )


def build_xception(channels: int, num_classes: int, size: int, cfg: ClassifierConfig) -> nn.Module:
    return Xception(channels, num_classes, size, cfg.width, cfg.middle_repeats)


CLASSIFIERS: dict[str, Callable[[int, int, int, ClassifierConfig], nn.Module]] = {
    "cnn": build_cnn,
    "cnn_bn": build_cnn_bn,
    "resnet18": build_resnet18,
    "resnet50": build_resnet50,
    "xception": build_xception,
}
"""name -> build(channels, num_classes, image_size, cfg) -> nn.Module returning logits."""


def make_optimizer(params, cfg: ClassifierConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}; use rmsprop, sgd or adam")


@torch.no_grad()
def predict_proba(model: nn.Module, images: torch.Tensor, batch: int = 128) -> torch.Tensor:
    """Class probabilities (N, num_classes)."""
    model.eval()
    return torch.cat([F.softmax(model(images[i : i + batch]), dim=1) for i in range(0, len(images), batch)])


class EpochBatches:
    """Indices of `size` of n items per call, a fresh permutation whenever the current one has
    fewer than `size` left (a partial epoch tail is never drawn)."""

    def __init__(self, n: int, size: int, rng: torch.Generator) -> None:
        self.n, self.size, self.rng = n, size, rng
        self.order, self.cursor = torch.randperm(n, generator=rng, device=rng.device), 0

    def next(self) -> torch.Tensor:
        if self.cursor + self.size > self.n:
            self.order, self.cursor = torch.randperm(self.n, generator=self.rng, device=self.rng.device), 0
        self.cursor += self.size
        return self.order[self.cursor - self.size : self.cursor]


def pretrain_batches(pretrain: tuple[torch.Tensor, torch.Tensor] | None, batch_size: int,
                     rng: torch.Generator) -> EpochBatches:
    n = 0 if pretrain is None else len(pretrain[0])
    if min(batch_size, n) < 2:  # BatchNorm in train mode fails on a batch of 1
        raise ValueError(f"synthetic pretraining needs >= 2 images per batch, got {n} synthetic images "
                         f"('synth.ratio' too small for 'synth.use' pretrain)")
    return EpochBatches(n, min(batch_size, n), rng)


SyntheticStream = Callable[[int, torch.Generator], tuple[torch.Tensor, torch.Tensor]]
"""(n, generator) -> n fresh synthetic (images, labels) on the training device."""


def fit_classifier(
    cfg: ClassifierConfig,
    train_images: torch.Tensor,
    train_labels: torch.Tensor,
    val_images: torch.Tensor | None,
    val_labels: torch.Tensor | None,
    num_classes: int,
    *,
    seed: int,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
    report: Report | None = None,
    runtime: RuntimeConfig | None = None,
    weights: torch.Tensor | None = None,
    stream: SyntheticStream | None = None,
    stream_share: float = 0.0,
    stream_weight: float = 1.0,
    pretrain: tuple[torch.Tensor, torch.Tensor] | None = None,
    pretrain_steps: int = 0,
) -> nn.Module:
    """Train for at most cfg.steps steps, keep the weights with the lowest validation loss (no
    validation images: train every step and keep the last weights).

    `weights`: a loss weight per training image (synthetic images mixed into a pool).
    `stream`: fresh synthetic images for every batch, `stream_share` of its batch_size images,
    each weighted `stream_weight`; the batch size and the step budget stay the same.
    `runtime`: CUDA-only speed-ups (bf16 autocast, channels-last, compile); None = plain fp32.
    `pretrain`: (images, labels) that alone make the batches of the first `pretrain_steps` steps
    (synthetic pretraining), augmented alike; the training images (and stream) take the rest of
    cfg.steps. Early stopping starts after them: the kept weights are always fine-tuned ones."""
    device = train_images.device
    torch.manual_seed(seed)
    rng = torch.Generator(device).manual_seed(seed)
    channels, size = train_images.shape[1], train_images.shape[-1]
    model = prepare_model(CLASSIFIERS[cfg.name](channels, num_classes, size, cfg).to(device), runtime, device)
    optimizer = make_optimizer(model.parameters(), cfg)
    best_loss, best_state, checks_without_gain = float("inf"), None, 0
    n = len(train_images)
    n_stream = int(round(cfg.batch_size * stream_share)) if stream is not None else 0
    n_real = min(cfg.batch_size - n_stream, n)
    # Every batch holds n_real real images (a partial epoch tail is never drawn), so this is the
    # only way to a batch of 1, where BatchNorm in train mode fails or normalises to zero.
    if n_real + n_stream < 2:
        raise ValueError(
            f"classifier batches need >= 2 images (BatchNorm), got 'classifier.batch_size' "
            f"{cfg.batch_size} with {n} training images"
        )
    real_batches = EpochBatches(n, n_real, rng)
    pre_batches = pretrain_batches(pretrain, cfg.batch_size, rng) if pretrain_steps > 0 else None
    # Summed on the device and read at each validation: a NaN / inf loss poisons the sum, and the
    # loop syncs with the host once per validation instead of once per step.
    loss_sum = torch.zeros((), device=device)
    for step in range(1, cfg.steps + 1):
        # --- Batch (reshuffle when an epoch is used up), plus fresh synthetic images ---
        pretraining = step <= pretrain_steps
        if pretraining:
            idx = pre_batches.next()
            x, y, w = pretrain[0][idx], pretrain[1][idx], None
        else:
            idx = real_batches.next()
            x, y = train_images[idx], train_labels[idx]
            w = weights[idx] if weights is not None else None
        if n_stream and not pretraining:
            xs, ys = stream(n_stream, rng)
            x, y = torch.cat([x, xs]), torch.cat([y, ys])
            real_w = w if w is not None else torch.ones(len(idx), device=device)
            w = torch.cat([real_w, torch.full((len(xs),), stream_weight, device=device)])
        if augment is not None:
            x = augment(x, rng)
        # --- Optimisation step ---
        model.train()
        with autocast(runtime, device):
            per_image = F.cross_entropy(model(x), y, reduction="none")
        loss = per_image.mean() if w is None else (per_image * w).sum() / w.sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.detach().float()
        # --- Early stopping on the fold's validation images ---
        if step % cfg.eval_every == 0 or step == cfg.steps:
            if not math.isfinite(float(loss_sum)):
                raise DivergedError(f"classifier loss became {float(loss_sum)} by step {step}; lower its lr")
            if val_images is None or pretraining:
                continue
            val_loss = float(
                F.cross_entropy(torch.log(predict_proba(model, val_images) + 1e-12), val_labels, reduction="mean")
            )
            if report:
                report(step, {"clf_train_loss": float(loss.detach()), "clf_val_loss": val_loss})
            if val_loss < best_loss - 1e-4:
                best_loss, best_state, checks_without_gain = val_loss, copy.deepcopy(model.state_dict()), 0
            else:
                checks_without_gain += 1
                if checks_without_gain >= cfg.patience:
                    break
    if best_state is not None:
        model.load_state_dict(best_state)
    return model
