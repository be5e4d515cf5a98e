"""The typed configuration of one trial, built from the space file's fixed values plus the flat
hyperparameters Optuna proposes (keys like "gan.lr")."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any

from .classifiers import ClassifierConfig
from .data.augment import AugmentConfig
from .data.preprocess import PreprocessConfig
from .gans.base import GANConfig
from .gans.simgan import RefinerConfig
from .runtime import RuntimeConfig


class ConfigError(ValueError):
    """A configuration key or value that cannot be used; the message names the key."""


@dataclass(frozen=True)
class DataConfig:
    path: str = "data/breastmnist.npz"
    """Dataset: a MedMNIST-style .npz, a folder with one sub-folder per class, or a CSV manifest."""
    folds: int = 5
    """k of the stratified k-fold cross-validation over the training pool."""
    seed: int = 0
    """Seed of the fold split; the same for every trial so trials are compared on equal folds."""
    positive_class: int = 1
    """Binary tasks: the label counted as positive ("diseased") for sensitivity and precision."""
    repeats: int = 1
    """Repeated k-fold: repeat r splits the pool again with seed `seed + r` (folds x repeats in all)."""

    def __post_init__(self) -> None:
        if self.repeats < 1:
            raise ValueError(f"'data.repeats' must be >= 1, got {self.repeats}")

    @property
    def total_folds(self) -> int:
        """Folds a trial runs (and Tune reports): folds x repeats."""
        return self.folds * self.repeats


@dataclass(frozen=True)
class SynthConfig:
    ratio: float = 0.0
    """Synthetic images per real training image, per class; 0 = real images only."""
    sample_seed: int = 1234
    """Seed of the fixed latent grid logged as samples/*.png, the same for every trial."""
    refiner: str = "none"
    """'none', or a refiner applied to every synthetic image ('simgan'; see the refiner section)."""
    filter_threshold: float = 0.0
    """Discriminator-score filter (eye paper: 0.76): keep a synthetic image only if its GAN's
    discriminator scores it >= this; 0 keeps everything."""
    gen_metrics: bool = False
    """Log generative metrics (classifier-feature Frechet distance, PRDC, memorisation); costs one
    extra real-only classifier per fold."""


@dataclass(frozen=True)
class EnhanceConfig:
    """Applied to every image at the start of each trial, so unlike the `preprocess` section
    (applied once when the files are read, then cached) its values can be searched."""

    bilateral: bool = False
    """Skin paper: an edge-preserving bilateral filter on every image before anything else."""
    sigma_space: float = 1.5
    """Bilateral filter: spatial sigma in pixels."""
    sigma_color: float = 0.1
    """Bilateral filter: intensity sigma as a fraction of the value range."""
    gamma: float = 1.0
    """Skin paper: gamma correction O = I^(1/gamma) on [0, 1] intensities (paper: 1.5); 1 = off."""


SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "gan": GANConfig,
    "classifier": ClassifierConfig,
    "synth": SynthConfig,
    "augment": AugmentConfig,
    "refiner": RefinerConfig,
    "enhance": EnhanceConfig,
    "preprocess": PreprocessConfig,
    "runtime": RuntimeConfig,
}
"""Space-file section -> the dataclass its keys configure."""


@dataclass(frozen=True)
class TrialConfig:
    data: DataConfig = field(default_factory=DataConfig)
    gan: GANConfig = field(default_factory=GANConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    synth: SynthConfig = field(default_factory=SynthConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    refiner: RefinerConfig = field(default_factory=RefinerConfig)
    enhance: EnhanceConfig = field(default_factory=EnhanceConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    seed: int = 0
    """Seed of GAN and classifier training; shared by all trials (paired comparison)."""

    @classmethod
    def from_flat(cls, flat: dict[str, Any], seed: int = 0) -> TrialConfig:
        """{"gan.lr": 2e-4, "synth.ratio": 1.0, ...} -> TrialConfig; unknown keys are errors."""
        grouped: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
        for key, value in flat.items():
            section, name = check_key(key)
            grouped[section][name] = value
        return cls(**{s: make_section(s, v) for s, v in grouped.items()}, seed=seed)

    def baseline_name(self) -> str | None:
        """Trials adding no synthetic image are baselines, whatever their GAN settings say:
        'classic_aug' with classic augmentation on, else 'real_only'."""
        if self.synth.ratio != 0:
            return None
        return "classic_aug" if self.augment.active else "real_only"

    def to_flat(self) -> dict[str, Any]:
        return {
            f"{section}.{k}": v
            for section in SECTIONS
            for k, v in dataclasses.asdict(getattr(self, section)).items()
        }


def check_key(key: str) -> tuple[str, str]:
    """'gan.lr' -> ('gan', 'lr'), or a ConfigError naming the key and what is allowed."""
    section, dot, name = key.partition(".")
    if not dot or section not in SECTIONS:
        raise ConfigError(f"unknown key '{key}': sections are {sorted(SECTIONS)}")
    allowed = {f.name for f in fields(SECTIONS[section])}
    if name not in allowed:
        raise ConfigError(f"unknown key '{key}': '{section}' takes {sorted(allowed)}")
    return section, name


def registry_choices() -> dict[str, set[str]]:
    """Keys whose value names an entry of an explicit registry."""
    from .classifiers import CLASSIFIERS
    from .gans import GANS, REFINERS

    return {
        "gan.family": set(GANS),
        "classifier.name": set(CLASSIFIERS),
        "classifier.optimizer": {"rmsprop", "sgd", "adam"},
        "synth.refiner": {"none", *REFINERS},
    }


def make_section(section: str, values: dict[str, Any]):
    cls = SECTIONS[section]
    types = {f.name: f.type for f in fields(cls)}
    coerced = {}
    choices = registry_choices()
    for name, value in values.items():
        key = f"{section}.{name}"
        coerced[name] = coerce(key, types[name], value)
        if key in choices and coerced[name] not in choices[key]:
            raise ConfigError(f"'{key}' must be one of {sorted(choices[key])}, got {value!r}")
    try:
        return cls(**coerced)
    except ValueError as exc:
        raise ConfigError(f"'{section}': {exc}") from exc


def coerce(key: str, type_name: Any, value: Any) -> Any:
    """YAML and Optuna give ints for floats and numpy scalars; normalise to the declared type."""
    type_name = str(type_name)
    try:
        if type_name == "float":
            return float(value)
        if type_name == "int":
            if float(value) != int(float(value)):
                raise ValueError("not a whole number")
            return int(float(value))
        if type_name == "bool":
            if not isinstance(value, bool):
                raise ValueError("not true/false")
            return value
        if type_name == "str":
            if not isinstance(value, str):
                raise ValueError("not a string")
            return value
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"'{key}' must be {type_name}, got {value!r} ({exc})") from exc
    return value
