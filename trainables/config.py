"""The typed configuration of one trial, built from the space file's fixed values plus the flat
hyperparameters Optuna proposes (keys like "gan.lr")."""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import types
import typing
from dataclasses import dataclass, field, fields
from typing import Any

from .classifiers import ClassifierConfig
from .data.augment import AugmentConfig
from .data.enhance import EnhanceConfig
from .data.preprocess import PreprocessConfig
from .gans.base import CombinationError, GANConfig
from .gans.simgan import RefinerConfig
from .runtime import RuntimeConfig


class ConfigError(ValueError):
    """A configuration key or value that cannot be used; the message names the key."""


class ConfigCombinationError(ConfigError):
    """A value that breaks a rule with another key (gans.base.CombinationError): not an error of
    one key alone; checked on a space's fixed values together."""


@dataclass(frozen=True)
class DataConfig:
    path: str = "data/breastmnist.npz"
    """Dataset: a MedMNIST-style .npz, a folder with one sub-folder per class, or a CSV manifest."""
    folds: int = 5
    """k of the stratified k-fold cross-validation over the training pool (>= 2)."""
    seed: int = 0
    """Seed of the fold split; the same for every trial so trials are compared on equal folds (>= 0)."""
    positive_class: int = 1
    """Binary tasks: the label counted as positive ("diseased") for sensitivity and precision
    (>= 0 and below the dataset's number of classes, checked once the dataset is loaded)."""
    repeats: int = 1
    """Repeated k-fold: repeat r splits the pool again with seed `seed + r` (folds x repeats in
    all; >= 1)."""
    merge: tuple[tuple[int, ...], ...] | None = None
    """Read a multi-class dataset as fewer classes: new class i is the union of the dataset's
    classes in group i, e.g. [[0], [1, 2, 3, 4]] makes RetinaMNIST's grades 1-4 "any retinopathy"
    (class 1; set positive_class to it). Every class of the dataset in exactly one group (checked
    once the dataset is loaded); None keeps the dataset's classes."""

    def __post_init__(self) -> None:
        if self.merge is not None:
            object.__setattr__(self, "merge", merge_groups(self.merge))

    @property
    def total_folds(self) -> int:
        """Folds a trial runs (and Tune reports): folds x repeats."""
        return self.folds * self.repeats


def merge_groups(value: Any) -> tuple[tuple[int, ...], ...]:
    """[[0], [1, 2]] -> ((0,), (1, 2)), or ValueError saying what is wrong with 'data.merge'."""
    shape = "a list of at least 2 non-empty lists of class indices, e.g. [[0], [1, 2, 3, 4]]"
    if not isinstance(value, (list, tuple)) or len(value) < 2:
        raise ValueError(f"'data.merge' must be {shape}, got {value!r}")
    groups = []
    for group in value:
        if (not isinstance(group, (list, tuple)) or not group
                or any(isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in group)):
            raise ValueError(f"'data.merge' must be {shape}, got {value!r}")
        groups.append(tuple(int(c) for c in group))
    flat = [c for g in groups for c in g]
    if len(flat) != len(set(flat)):
        raise ValueError(f"'data.merge': a class may be in one group only, got {value!r}")
    return tuple(groups)


@dataclass(frozen=True)
class SynthConfig:
    ratio: float = 0.0
    """Synthetic images per real training image, per class; 0 = real images only (>= 0: a
    negative ratio would silently train real-only trials that are not labelled baselines)."""
    sample_seed: int = 1234
    """Seed of the fixed latent grid logged as samples/*.png, the same for every trial (>= 0)."""
    refiner: str = "none"
    """'none', or a refiner applied to every synthetic image ('simgan'; see the refiner section)."""
    filter_threshold: float = 0.0
    """Discriminator-score filter (eye paper: 0.76): keep a synthetic image only if its GAN's
    discriminator scores it >= this; 0 keeps everything. In [0, 1] (a sigmoid score)."""
    gen_metrics: bool = False
    """Log generative metrics (classifier-feature Frechet distance, PRDC, memorisation); costs one
    extra real-only classifier per fold."""
    classes: str = "all"
    """'all': synthesise every class at the ratio; 'minority': only the classes smaller than the
    largest one (oversampling the rare class with synthetic images)."""
    mode: str = "pool"
    """'pool': a fixed set of ratio x real synthetic images drawn once, mixed into the training
    set; 'stream': fresh images drawn from the generator for every classifier batch, in the same
    proportion (synthetic images as stochastic augmentation). The step budget is the same."""
    weight: float = 1.0
    """Loss weight of a synthetic image relative to a real one (> 0)."""
    class_ratio: tuple[tuple[int, float], ...] = ()
    """Per-class ratios that replace `ratio` for the classes listed, as (class index, ratio)
    pairs sorted by class. Written in a space file as a mapping, `class_ratio: {0: 1.0, 1:
    {uniform: [0, 2]}}`, which becomes one key per class (`synth.class_ratio.0`): Optuna proposes
    one number per key, never a mapping, so each class's amount is searched (or fixed) on its own
    and shows as its own leaderboard column. Each ratio >= 0; the class index must exist."""
    use: str = "mix"
    """How synthetic images train the classifier: 'mix' (into the real batches, as `mode` says);
    'pretrain' (synthetic images only for `pretrain_share` of the steps, then real images only);
    'mix+pretrain' (synthetic only, then real + synthetic mixed). The step budget is the same."""
    pretrain_share: float = 0.5
    """'pretrain' / 'mix+pretrain': the share of classifier.steps trained on synthetic images only,
    in (0, 1) (rounded to whole steps; the fine-tuning phase keeps at least one step)."""
    select: str = "none"
    """Classifier-guided selection of synthetic images: 'none'; 'confidence' (keep an image only if
    a classifier trained on the real training images alone gives its intended class a probability
    >= `select_confidence`); 'confidence+feature' (and its penultimate features lie within
    `select_distance` of the class's real images). Oversampled to reach each class's count."""
    select_confidence: float = 0.5
    """Minimum probability of the intended class for a synthetic image to be kept, in [0, 1]."""
    select_distance: float = 0.9
    """'confidence+feature': the quantile q in (0, 1] of the distances of the class's real training
    images to their feature centroid; a synthetic image is kept only if it is no farther from the
    centroid than that (q = 0.9: as close as 90 % of the real images are)."""
    select_rounds: int = 10
    """Selection draws at most this many rounds per class (later rounds sized by the acceptance
    so far, at most 10x the request); a class still short then fails the trial (>= 1)."""

    def ratios(self, num_classes: int) -> list[float]:
        """The ratio of each class: `class_ratio` where given, else `ratio`."""
        per_class = dict(self.class_ratio)
        return [per_class.get(c, self.ratio) for c in range(num_classes)]

    @property
    def adds_images(self) -> bool:
        """Whether any class gets a nonzero ratio (otherwise the trial is a baseline)."""
        return self.ratio != 0 or any(r != 0 for _, r in self.class_ratio)


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
        flat = dict(flat)
        seed = flat.pop("seed", seed)  # to_flat writes it: a trial_config.json says the seed it ran with
        for key, value in flat.items():
            section, name = check_key(key)
            if (entry := mapping_entry(key)) is not None:
                grouped[section].setdefault(name, {})[entry[1]] = value
            else:
                grouped[section][name] = value
        return cls(**{s: make_section(s, v) for s, v in grouped.items()}, seed=seed)

    def baseline_name(self) -> str | None:
        """Trials adding no synthetic image are baselines, whatever their GAN settings say:
        'classic_aug' / 'trivial_aug' with that augmentation policy on, else 'real_only'."""
        if self.synth.adds_images:
            return None
        if not self.augment.active:
            return "real_only"
        return "trivial_aug" if self.augment.policy == "trivial" else "classic_aug"

    def to_flat(self) -> dict[str, Any]:
        flat = {
            f"{section}.{k}": v
            for section in SECTIONS
            for k, v in dataclasses.asdict(getattr(self, section)).items()
            if f"{section}.{k}" not in MAPPING_KEYS
        }
        flat.update({f"synth.class_ratio.{c}": r for c, r in self.synth.class_ratio})  # from_flat's form
        return {**flat, "seed": self.seed}


MOVED_KEYS = {
    "preprocess.bilateral": "enhance.bilateral",
    "preprocess.bilateral_sigma_space": "enhance.sigma_space",
    "preprocess.bilateral_sigma_color": "enhance.sigma_color",
    "preprocess.gamma": "enhance.gamma",
}
"""Keys that were removed -> the key that does the same now (one enhancement, applied per trial)."""


MAPPING_KEYS = {"synth.class_ratio": "a class index (0, 1, ...)"}
"""Fields written as a mapping in a space file and searched one key per entry,
'<field>.<entry>' ('synth.class_ratio.1'): Optuna proposes numbers and choices, not mappings."""


def mapping_entry(key: str) -> tuple[str, int] | None:
    """'synth.class_ratio.1' -> ('synth.class_ratio', 1); None for any other key; a ConfigError
    naming the key when its entry is not a class index."""
    for field_key, what in MAPPING_KEYS.items():
        if key.startswith(field_key + "."):
            entry = key[len(field_key) + 1:]
            if not entry.isdigit():
                raise ConfigError(f"'{key}': the part after '{field_key}.' must be {what}, got {entry!r}")
            return field_key, int(entry)
    return None


def check_key(key: str) -> tuple[str, str]:
    """'gan.lr' -> ('gan', 'lr'), or a ConfigError naming the key and what is allowed. An entry
    of a mapping field ('synth.class_ratio.1') gives its field ('synth', 'class_ratio')."""
    if (entry := mapping_entry(key)) is not None:
        section, _, name = entry[0].partition(".")
        return section, name
    if key in MAPPING_KEYS:
        raise ConfigError(f"'{key}' takes one key per entry, '{key}.<{MAPPING_KEYS[key]}>' (a mapping in a space file)")
    if key in MOVED_KEYS:
        raise ConfigError(f"'{key}' was removed: use '{MOVED_KEYS[key]}' (the enhancement is applied per trial, "
                          "on the same [0, 1] intensity scale, and can be searched)")
    section, dot, name = key.partition(".")
    if not dot or section not in SECTIONS:
        raise ConfigError(f"unknown key '{key}'{close_match(section, SECTIONS, '{}.' + name)}: sections are "
                          f"{sorted(SECTIONS)}")
    allowed = {f.name for f in fields(SECTIONS[section])}
    if name not in allowed:
        raise ConfigError(f"unknown key '{key}'{close_match(name, allowed, section + '.{}')}: '{section}' takes "
                          f"{sorted(allowed)}")
    return section, name


def close_match(word: str, options, shown: str = "{}") -> str:
    """" (did you mean 'gan.lr'?)" for the nearest of `options` to `word` (difflib), written into
    `shown` (e.g. 'gan.{}'); or ""."""
    import difflib

    close = difflib.get_close_matches(word, sorted(options), n=1)
    return f" (did you mean '{shown.format(close[0])}'?)" if close else ""


# --- Valid ranges -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Range:
    """A closed, open or half-bounded interval of numbers; None = unbounded on that side."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    """True: `low` itself is not allowed (lr > 0)."""
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        # Written as "not outside" comparisons so NaN is never inside a bounded range.
        above = self.low is None or (value > self.low if self.low_open else value >= self.low)
        below = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return bool(above and below)

    def __str__(self) -> str:
        if self.low is not None and self.high is not None:
            return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        if self.high is not None:
            return f"{'<' if self.high_open else '<='} {self.high:g}"
        return "any number"


def at_least(low: float) -> Range:
    return Range(low)


def above(low: float) -> Range:
    return Range(low, low_open=True)


ANY = Range()
UNIT = Range(0, 1)
"""Probabilities, strengths, scores."""
POSITIVE = above(0)
"""Learning rates, sigmas, spacings: zero or less is meaningless."""
COUNT = at_least(1)
"""Batch sizes, step budgets, report intervals (0 would divide by zero or train nothing)."""
SEED = at_least(0)
"""numpy and torch seeds must be non-negative."""

FIELD_RANGES: dict[str, Range] = {
    # data (read on the driver; positive_class is also checked against the dataset, check_dataset_fit)
    "data.folds": at_least(2),  # one fold would leave nothing to validate on
    "data.seed": SEED,
    "data.positive_class": at_least(0),
    "data.repeats": COUNT,
    # gan
    "gan.latent_dim": COUNT,
    "gan.lr": POSITIVE,
    "gan.beta1": Range(0, 1, high_open=True),  # Adam needs beta1 < 1
    "gan.batch_size": COUNT,
    "gan.steps": COUNT,  # steps <= 0 silently trained nothing
    "gan.width": COUNT,
    "gan.gamma": at_least(0),
    "gan.alpha": POSITIVE,  # Beta(alpha, alpha) needs alpha > 0
    "gan.mixture_components": at_least(0),  # 0 = plain N(0, I)
    "gan.d_steps": COUNT,
    "gan.log_every": COUNT,
    "gan.ada_target": Range(0, 1, high_open=True),  # 0 = off (fixed p); 1 would push p to its end
    "gan.ema": Range(0, 1, high_open=True),  # decay; 0 = off, 1 would never move
    "gan.lecam": at_least(0),
    # classifier
    "classifier.lr": POSITIVE,
    "classifier.batch_size": COUNT,  # <= 0 was reported as DIVERGED ("lower its lr")
    "classifier.steps": COUNT,
    "classifier.eval_every": COUNT,
    "classifier.patience": COUNT,
    "classifier.width": POSITIVE,
    "classifier.weight_decay": at_least(0),
    "classifier.middle_repeats": at_least(0),  # Xception with no middle flow is still a network
    # synth
    "synth.ratio": at_least(0),  # < 0 gave real-only trials that were not labelled baselines
    "synth.sample_seed": SEED,
    "synth.filter_threshold": UNIT,  # the discriminator's sigmoid score
    "synth.weight": POSITIVE,  # a zero weight would make synthetic images dead weight in the batch
    "synth.pretrain_share": Range(0, 1, low_open=True, high_open=True),  # 0 or 1 would leave a phase empty
    "synth.select_confidence": UNIT,  # a softmax probability
    "synth.select_distance": Range(0, 1, low_open=True),  # a quantile; 0 would keep (almost) nothing
    "synth.select_rounds": COUNT,
    # augment (AugmentConfig's own __post_init__ checks the same for direct construction)
    "augment.strength": UNIT,
    "augment.flip_p": UNIT,
    "augment.quarter_turn_p": UNIT,
    "augment.max_rotation_deg": Range(0, 180),  # +-180 already covers every angle
    "augment.max_translate": Range(0, 1, high_open=True),  # a whole-image shift leaves nothing
    "augment.max_zoom": Range(0, 1, high_open=True),  # a zoom factor 1 - max must stay > 0
    # refiner
    "refiner.lambda_reg": at_least(0),
    "refiner.lr": POSITIVE,
    "refiner.steps": COUNT,
    "refiner.pretrain_r_steps": at_least(0),
    "refiner.pretrain_d_steps": at_least(0),
    "refiner.buffer_size": COUNT,
    "refiner.batch_size": COUNT,
    "refiner.width": COUNT,
    "refiner.log_every": COUNT,
    "refiner.ada_target": Range(0, 1, high_open=True),
    "refiner.ema": Range(0, 1, high_open=True),
    "refiner.lecam": at_least(0),
    # enhance
    "enhance.sigma_space": POSITIVE,
    "enhance.sigma_color": POSITIVE,
    "enhance.gamma": POSITIVE,  # O = I^(1/gamma)
    # preprocess (None, where allowed, means "keep as is" and is not range-checked)
    "preprocess.size": at_least(4),  # below 4 px no classifier or GAN layer fits
    "preprocess.slice": ANY,  # a z index, negative counts from the end; checked against each volume
    "preprocess.target_spacing": POSITIVE,
    "preprocess.crop_size": COUNT,
    "preprocess.crop_fraction": Range(0, 1, low_open=True),
    "preprocess.mask_margin": at_least(0),
    "preprocess.zscore_clip": POSITIVE,
    "preprocess.clip_low": Range(0, 100, high_open=True),
    "preprocess.clip_high": Range(0, 100, low_open=True),  # and > clip_low (PreprocessConfig)
}
"""'section.field' -> its valid values, for every int or float field of every section (a test
fails when a numeric field has none). Checked for fixed values and for both ends of a searched
range (every choice) when the space is loaded, before any trial starts."""


ENTRY_RANGES: dict[str, Range] = {"synth.class_ratio": at_least(0)}  # like synth.ratio
"""Mapping field (MAPPING_KEYS) -> the valid values of each of its entries."""


def is_numeric(tp: Any) -> bool:
    """int or float, alone or in a union (int | None, str | int); bool is not a number here."""
    args = typing.get_args(tp) if _is_union(tp) else (tp,)
    return any(a in (int, float) for a in args)


def is_int_field(key: str) -> bool:
    """Whether the field takes whole numbers (int, int | None), not floats."""
    section, _, name = key.partition(".")
    tp = field_types(SECTIONS[section])[name]
    members = typing.get_args(tp) if _is_union(tp) else (tp,)
    return int in members and float not in members


def outside_range(rng: Range) -> list[float]:
    """A value just outside each bounded end (the open end itself, or one past a closed end): what
    tests and the bad-input battery try for every field."""
    values = []
    if rng.low is not None:
        values.append(rng.low if rng.low_open else rng.low - 1)
    if rng.high is not None:
        values.append(rng.high if rng.high_open else rng.high + 1)
    return values


def check_range(key: str, value: Any) -> None:
    """ConfigError "'gan.batch_size' must be >= 1, got 0" when a number is outside its range."""
    rng = FIELD_RANGES.get(key)
    if rng is None or value is None or isinstance(value, (bool, str)):
        return
    if value not in rng:
        raise ConfigError(f"'{key}' must be {rng}, got {value!r}")


def unsafe_name(name: str) -> str | None:
    """Why a name that becomes part of a file or folder path (a class name, an experiment name)
    is unsafe there, or None: no path separator, no '..', no control character, not empty."""
    if not name.strip():
        return "is empty"
    if "/" in name or "\\" in name:
        return "contains a path separator ('/' or '\\')"
    if ".." in name:
        return "contains '..'"
    bad = sorted({repr(c) for c in name if ord(c) < 32 or ord(c) == 127})
    if bad:
        return f"contains control character(s) {', '.join(bad)}"
    return None


def check_dataset_fit(cfg: TrialConfig, num_classes: int) -> None:
    """What can only be checked once the dataset is known: a ConfigError naming the key."""
    if cfg.data.merge is not None:
        listed = sorted(c for g in cfg.data.merge for c in g)
        if listed != list(range(num_classes)):
            raise ConfigError(f"'data.merge' must list every class of the dataset (0..{num_classes - 1}) exactly once, "
                              f"got {[list(g) for g in cfg.data.merge]}")
        num_classes = len(cfg.data.merge)
    if not cfg.data.positive_class < num_classes:
        raise ConfigError(f"'data.positive_class' must be a class index below the dataset's {num_classes} "
                          f"classes (0..{num_classes - 1}), got {cfg.data.positive_class}")
    for c, _ in cfg.synth.class_ratio:
        if not c < num_classes:
            raise ConfigError(f"'synth.class_ratio.{c}' names class {c}, but the dataset has {num_classes} classes "
                              f"(0..{num_classes - 1})")


def registry_choices() -> dict[str, set[str]]:
    """Keys whose value names an entry of an explicit registry."""
    from .classifiers import CLASSIFIERS
    from .gans import GANS, REFINERS

    return {
        "gan.family": set(GANS),
        "classifier.name": set(CLASSIFIERS),
        "classifier.optimizer": {"rmsprop", "sgd", "adam"},
        "synth.refiner": {"none", *REFINERS},
        "synth.classes": {"all", "minority", "balance"},
        "synth.mode": {"pool", "stream"},
        "synth.use": {"mix", "pretrain", "mix+pretrain"},
        "synth.select": {"none", "confidence", "confidence+feature"},
        "gan.loss": {"bce", "hinge"},
        "refiner.loss": {"bce", "hinge"},
    }


@functools.cache
def field_types(cls: type) -> dict[str, Any]:
    """Field name -> its resolved type (the annotations are strings under `from __future__ import
    annotations`; get_type_hints evaluates them, so `int | None` is a real union)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in fields(cls)}


def make_section(section: str, values: dict[str, Any]):
    cls = SECTIONS[section]
    types_ = field_types(cls)
    coerced = {}
    choices = registry_choices()
    for name, value in values.items():
        key = f"{section}.{name}"
        if key in MAPPING_KEYS:
            coerced[name] = coerce_mapping(key, value)
            continue
        coerced[name] = coerce(key, types_[name], value)
        check_range(key, coerced[name])
        if key in choices and coerced[name] not in choices[key]:
            raise ConfigError(f"'{key}' must be one of {sorted(choices[key])}, got {value!r}")
    try:
        return cls(**coerced)
    except CombinationError as exc:
        raise ConfigCombinationError(f"'{section}': {exc}") from exc
    except ValueError as exc:
        raise ConfigError(f"'{section}': {exc}") from exc


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def _type_name(tp: Any) -> str:
    if _is_union(tp):
        return " or ".join("null" if a is type(None) else _type_name(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


def _coerce_one(tp: Any, value: Any) -> Any:
    """value as `tp` (one of bool, int, float, str), or ValueError saying why not."""
    if tp is bool:
        if not isinstance(value, bool):
            raise ValueError("not true/false")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ValueError("not a string")
        return value
    if tp in (int, float):
        # YAML and Optuna give ints for floats and numpy scalars; a bool or a quoted number is a mistake.
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ValueError("not a number")
        if not math.isfinite(float(value)):
            raise ValueError("not a finite number")
        if tp is int:
            if float(value) != int(value):
                raise ValueError("not a whole number")
            return int(value)
        return float(value)
    return value  # a type without coercion rules (none today): passed through as given


def coerce(key: str, tp: Any, value: Any) -> Any:
    """Normalise a value to the field's declared type; a union (`int | None`, `str | int`) takes
    the first member the value fits. ConfigError naming the key otherwise."""
    members = typing.get_args(tp) if _is_union(tp) else (tp,)
    if value is None and type(None) in members:
        return None
    reasons = []
    for member in members:
        if member is type(None):
            continue
        try:
            return _coerce_one(member, value)
        except (TypeError, ValueError) as exc:
            reasons.append(str(exc))
    raise ConfigError(f"'{key}' must be {_type_name(tp)}, got {value!r} ({'; '.join(dict.fromkeys(reasons))})")


def coerce_mapping(key: str, entries: dict[int, Any]) -> tuple[tuple[int, float], ...]:
    """{1: 2.0, 0: 0.5} (from_flat's grouping of '<key>.<class>' keys) -> ((0, 0.5), (1, 2.0)),
    each ratio coerced and range-checked under its own key ('synth.class_ratio.1')."""
    out = []
    for entry, value in sorted(entries.items()):
        entry_key = f"{key}.{entry}"
        ratio = coerce(entry_key, float, value)
        if ratio not in ENTRY_RANGES[key]:
            raise ConfigError(f"'{entry_key}' must be {ENTRY_RANGES[key]}, got {value!r}")
        out.append((entry, ratio))
    return tuple(out)
