"""The trial config's boundary: every numeric field of every section has a valid range (so a new
field is covered by default), values are coerced to the declared type (unions included) with the
key named, and removed keys point at their replacements."""

from __future__ import annotations

import re

import pytest

from gantune.trainables.config import (
    ANY,
    FIELD_RANGES,
    MOVED_KEYS,
    SECTIONS,
    ConfigError,
    TrialConfig,
    check_dataset_fit,
    field_types,
    is_int_field,
    is_numeric,
    outside_range,
)

NUMERIC_KEYS = sorted(
    f"{section}.{name}" for section, cls in SECTIONS.items() for name, tp in field_types(cls).items() if is_numeric(tp)
)


def test_every_numeric_field_has_a_range():
    """A new int/float field fails here until FIELD_RANGES says which values it takes."""
    missing = [key for key in NUMERIC_KEYS if key not in FIELD_RANGES]
    assert not missing, f"add these to trainables.config.FIELD_RANGES: {missing}"
    stale = sorted(set(FIELD_RANGES) - set(NUMERIC_KEYS))
    assert not stale, f"FIELD_RANGES names keys that are not numeric fields: {stale}"


def outside(key: str) -> list[float]:
    """Values just outside each bounded end of the key's range, of the field's own type."""
    return [
        int(v) if is_int_field(key) else v for v in outside_range(FIELD_RANGES.get(key, ANY))
    ]  # a missing entry fails the test above


BELOW_OR_ABOVE = [(key, v) for key in NUMERIC_KEYS for v in outside(key)]


@pytest.mark.parametrize("key, value", BELOW_OR_ABOVE)
def test_values_outside_the_range_are_refused_naming_the_key(key, value):
    with pytest.raises(ConfigError, match="^" + re.escape(f"'{key}' must be {FIELD_RANGES[key]}, got")):
        TrialConfig.from_flat({key: value})


def test_ends_of_each_range_are_accepted():
    """The closed end itself is valid (batch_size 1, filter_threshold 0 and 1, ratio 0)."""
    for key in ("gan.batch_size", "synth.filter_threshold", "synth.ratio", "augment.strength", "data.folds"):
        rng = FIELD_RANGES[key]
        for end in (rng.low, rng.high):
            if end is not None:
                TrialConfig.from_flat({key: end})


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("gan.batch_size", 0, "'gan.batch_size' must be >= 1, got 0"),
        ("gan.log_every", 0, "'gan.log_every' must be >= 1, got 0"),
        ("classifier.eval_every", 0, "'classifier.eval_every' must be >= 1, got 0"),
        ("classifier.batch_size", -4, "'classifier.batch_size' must be >= 1, got -4"),
        ("gan.steps", -5, "'gan.steps' must be >= 1, got -5"),
        ("synth.ratio", -1.0, "'synth.ratio' must be >= 0, got -1.0"),
        ("synth.filter_threshold", 5.0, "'synth.filter_threshold' must be in [0, 1], got 5.0"),
        ("gan.lr", -0.1, "'gan.lr' must be > 0, got -0.1"),
        ("data.repeats", 0, "'data.repeats' must be >= 1, got 0"),
    ],
)
def test_the_probed_values_get_the_documented_message(key, value, message):
    with pytest.raises(ConfigError) as info:
        TrialConfig.from_flat({key: value})
    assert str(info.value) == message


@pytest.mark.parametrize(
    "key, value, why",
    [
        ("gan.steps", True, "must be int, got True"),  # a bool is not 1
        ("gan.steps", "300", "must be int, got '300'"),
        ("gan.lr", "1e-3", "must be float, got '1e-3'"),
        ("gan.lr", float("nan"), "not a finite number"),
        ("data.folds", 2.5, "not a whole number"),
        ("preprocess.size", "80", "'preprocess.size' must be int or null, got '80'"),
        ("preprocess.size", 80.5, "'preprocess.size' must be int or null"),
        ("preprocess.slice", 1.5, "'preprocess.slice' must be str or int"),
        ("preprocess.target_spacing", "1.4", "'preprocess.target_spacing' must be float or null"),
        ("augment.enabled", 1, "'augment.enabled' must be bool"),
        ("gan.family", 3, "'gan.family' must be str"),
    ],
)
def test_types_are_checked_with_the_key_named(key, value, why):
    with pytest.raises(ConfigError, match="^'" + key.replace(".", r"\.") + "'") as info:
        TrialConfig.from_flat({key: value})
    assert why in str(info.value)


def test_unions_are_coerced_to_the_member_that_fits():
    cfg = TrialConfig.from_flat({"preprocess.size": 80.0, "preprocess.slice": -1, "preprocess.crop_size": None})
    assert cfg.preprocess.size == 80 and type(cfg.preprocess.size) is int
    assert cfg.preprocess.slice == -1 and cfg.preprocess.crop_size is None
    assert TrialConfig.from_flat({"preprocess.slice": "all"}).preprocess.slice == "all"


@pytest.mark.parametrize("old, new", sorted(MOVED_KEYS.items()))
def test_removed_preprocess_enhancement_keys_name_the_new_ones(old, new):
    with pytest.raises(ConfigError, match=rf"'{old}' was removed: use '{new}'"):
        TrialConfig.from_flat({old: 1.5})
    TrialConfig.from_flat({new: True if new == "enhance.bilateral" else 1.5})  # the new key works


def test_positive_class_is_checked_against_the_dataset():
    check_dataset_fit(TrialConfig.from_flat({"data.positive_class": 1}), num_classes=2)
    with pytest.raises(
        ConfigError, match=r"'data.positive_class' must be a class index below the dataset's 2 classes \(0..1\), got 7"
    ):
        check_dataset_fit(TrialConfig.from_flat({"data.positive_class": 7}), num_classes=2)


def test_the_trial_time_filter_check_names_the_space_key():
    """Issue 12: it said 'filter.threshold', a key that does not exist."""
    from gantune.trainables.gans.filter import check_threshold

    with pytest.raises(ValueError, match=r"^'synth.filter_threshold' must be in \[0, 1\], got 5"):
        check_threshold(5)
