"""Search spaces are YAML files (data, not code). Loading validates every key and domain before
Ray starts, with errors that name the file and the key.

    name: demo
    data: {path: data/breastmnist.npz, folds: 3}
    gan:  {lr: {loguniform: [5.0e-5, 1.0e-3]}, batch_size: {choice: [32, 64]}, steps: 200}
    synth: {ratio: {uniform: [0.0, 3.0]}}
    search: {num_samples: 8, metric: val_auc, mode: max}
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    import optuna.distributions as od

from gantune.trainables.config import (
    MAPPING_KEYS,
    SECTIONS,
    ConfigCombinationError,
    ConfigError,
    TrialConfig,
    check_key,
    close_match,
    unsafe_name,
)
from gantune.trainables.generative_metrics import GEN_METRIC_NAMES
from gantune.trainables.metrics import trial_metric_names

DOMAIN_KINDS = ("uniform", "loguniform", "int", "logint", "choice")


class SpaceError(ValueError):
    """A space file that cannot be used; the message starts with the file and names the key."""


@dataclass(frozen=True)
class SearchSettings:
    num_samples: int = 8
    """Trials to run, baselines included."""
    metric: str = "val_auc"
    """The objective, a trial metric (mean over the folds done)."""
    mode: str = "max"
    """'max' or 'min'."""
    max_concurrent: int | str = 2
    """Trials running at once (also bounded by the cluster's CPUs / GPUs); 'auto': as many as the
    cluster's nodes can place at the start (search/resources.schedulable_slots)."""
    scheduler: str = "asha"
    """'asha' (stop poor trials after a fold or two) or 'fifo' (run every trial to the end)."""
    grace_period: int = 1
    """ASHA: folds every trial completes before it can be stopped."""
    reduction_factor: int = 2
    """ASHA: keep the top 1/reduction_factor at each rung."""
    sampler: str = "tpe"
    """Optuna sampler: 'tpe' or 'random'."""
    baselines: tuple[str, ...] = ("real_only",)
    """Baseline trials evaluated first in every search: 'real_only' and/or 'classic_aug'."""
    objectives: tuple[str, ...] = ()
    """Multi-objective search: every metric optimised together, the first being `metric` (which
    ranks the leaderboard). Written in a space file as a list, `metric: [val_auc, val_sensitivity]`
    with `mode: [max, max]`; empty = single objective."""
    objective_modes: tuple[str, ...] = ()
    """'max' or 'min' for each of `objectives`."""
    rank_by: str = "mean"
    """How the leaderboard and `promote` rank trials that finished every fold: 'mean' (the
    metric's mean over folds) or 'paired_lcb' (the one-sided 95 % lower confidence bound of the
    paired per-fold difference to the real_only baseline; needs that baseline)."""

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1


FIXED_SECTIONS = {
    "data": "",
    "preprocess": " (search the 'enhance' section's gamma / bilateral instead)",
}
"""Sections read on the driver when the dataset is loaded: one value per search."""

BASELINE_VALUES = {
    "real_only": {"synth.ratio": 0.0, "augment.enabled": False},
    "classic_aug": {"synth.ratio": 0.0, "augment.enabled": True, "augment.policy": "classic"},
    "trivial_aug": {"synth.ratio": 0.0, "augment.enabled": True, "augment.policy": "trivial"},
}
"""The searched values that turn a trial into each baseline."""

BASELINE_NEEDS = {
    "real_only": "it needs 'synth.ratio' searched with 0 in its range and augmentation that can be off "
    "(augment.enabled false, or augment.strength searched from 0)",
    "classic_aug": "it needs 'synth.ratio' searched with 0 in its range, augment.enabled true and "
    "augment.strength searched (its midpoint is the baseline's strength)",
    "trivial_aug": "it needs 'synth.ratio' searched with 0 in its range, augment.enabled true, "
    "augment.policy searched over a choice with 'trivial' (or fixed to it) and augment.strength searched",
}

CLASS_RATIO_NEED = " (and every 'synth.class_ratio.<class>' searched with 0 in its range, none fixed above 0)"

SMOKE_TEST = {
    "data.folds": 2,
    "gan.steps": 10,
    "gan.log_every": 5,
    "classifier.steps": 20,
    "classifier.eval_every": 10,
    "refiner.steps": 4,
    "refiner.pretrain_r_steps": 4,
    "refiner.pretrain_d_steps": 2,
    "refiner.log_every": 2,
}
"""--smoke-test: every budget shrunk so any space finishes in a couple of minutes."""


@dataclass(frozen=True)
class Space:
    path: str
    name: str
    fixed: dict[str, Any]
    """Flat fixed values ("gan.steps": 200)."""
    domains: dict[str, dict[str, Any]]
    """Flat searched keys -> {"uniform": [lo, hi]} etc."""
    search: SearchSettings = field(default_factory=SearchSettings)
    smoke_test: bool = False
    """Budgets shrunk by --smoke-test (SMOKE_TEST): the search's parent run is tagged
    gantune.smoke_test=true and `gantune promote` refuses it unless forced."""

    def optuna_space(self) -> dict[str, od.BaseDistribution]:
        return {key: to_distribution(self.path, key, d) for key, d in self.domains.items()}

    def baseline_points(self) -> list[dict[str, Any]]:
        """Searched values for each baseline, evaluated first: no synthetic image (synth.ratio = 0)
        and classic augmentation off ('real_only') or on ('classic_aug'); every other searched
        key at a neutral value (it does not matter without a GAN)."""
        points = []
        for name in self.search.baselines:
            point = {key: neutral_value(d) for key, d in self.domains.items()}
            point.update({k: v for k, v in BASELINE_VALUES[name].items() if k in self.domains})
            # Per-class ratios replace synth.ratio for their class: a baseline zeroes them too.
            point.update({k: 0.0 for k in self.domains if k.startswith("synth.class_ratio.")})
            if name == "real_only" and "augment.enabled" not in self.domains and "augment.strength" in self.domains:
                point["augment.strength"] = 0.0  # augmentation fixed on: off through its strength
            cfg = TrialConfig.from_flat({**self.fixed, **point})
            inside = all(in_domain(point[k], d) for k, d in self.domains.items())
            if cfg.baseline_name() != name or not inside:
                per_class = any(k.startswith("synth.class_ratio.") for k in [*self.fixed, *self.domains])
                raise SpaceError(f"{self.path}: 'search.baselines' lists '{name}', but {BASELINE_NEEDS[name]}"
                                 f"{CLASS_RATIO_NEED if per_class else ''}")
            points.append(point)
        return points

    def with_overrides(self, overrides: dict[str, Any], source: str | None = None) -> Space:
        """The space with these keys fixed; an error names `source` (e.g. '--set') or else the space file."""
        fixed, domains = dict(self.fixed), dict(self.domains)
        search = self.search
        where = source or self.path
        for key, value in overrides.items():
            if key.startswith("search."):
                search = make_search_settings(where, {**vars(search), key[7:]: value})
                continue
            check(where, key, value)
            domains.pop(key, None)
            fixed[key] = value
        space = replace(self, fixed=fixed, domains=domains, search=search)
        check_baselines(space)
        return space

    def baseline_of(self, params: dict[str, Any]) -> str | None:
        """The baseline a trial with these searched values is ('real_only', 'classic_aug') or None."""
        return TrialConfig.from_flat({**self.fixed, **params}).baseline_name()

    def logs_gen_metrics(self) -> bool:
        """Whether trials report the generative metrics (synth.gen_metrics fixed on, or searched)."""
        return self.fixed.get("synth.gen_metrics") is True or "synth.gen_metrics" in self.domains

    def resolved(self) -> dict[str, Any]:
        """Everything a trial will see, for printing and logging: fixed values and domains."""
        return {
            "name": self.name,
            "space_file": self.path,
            "fixed": dict(sorted(self.fixed.items())),
            "searched": dict(sorted(self.domains.items())),
            "search": vars(self.search),
            **({"notes": [MULTI_OBJECTIVE_NOTE]} if self.search.multi_objective else {}),
            **({"smoke_test": True} if self.smoke_test else {}),  # absent otherwise: older records stay equal
        }


def check(path: str, key: str, value: Any) -> None:
    try:
        check_key(key)
        TrialConfig.from_flat({key: value})
    except ConfigCombinationError:
        pass  # a rule with another key: check_baselines checks the fixed values together
    except (ValueError, TypeError) as exc:  # ConfigError, and dataclasses' own range checks
        raise SpaceError(f"{path}: {exc}") from exc


def neutral_value(domain: dict[str, Any]) -> Any:
    (kind, args), = domain.items()
    if kind == "choice":
        return args[0]
    if kind in ("loguniform", "logint"):
        value = (args[0] * args[1]) ** 0.5
    else:
        value = (args[0] + args[1]) / 2
    return int(round(value)) if kind in ("int", "logint") else value


def in_domain(value: Any, domain: dict[str, Any]) -> bool:
    (kind, args), = domain.items()
    return value in args if kind == "choice" else args[0] <= value <= args[1]


def to_distribution(path: str, key: str, domain: dict[str, Any]) -> od.BaseDistribution:
    import optuna.distributions as od  # here: a GPU node's check reads space files without Optuna

    (kind, args), = domain.items()
    if kind == "choice":
        return od.CategoricalDistribution(list(args))
    low, high = args
    if kind in ("int", "logint"):
        return od.IntDistribution(int(low), int(high), log=kind == "logint")
    return od.FloatDistribution(float(low), float(high), log=kind == "loguniform")


def parse_domain(path: str, key: str, value: dict) -> dict[str, Any]:
    try:  # first: an unknown key is not a range problem (its "low end" would be blamed otherwise)
        check_key(key)
    except ConfigError as exc:
        raise SpaceError(f"{path}: {exc}") from None
    if len(value) != 1 or next(iter(value)) not in DOMAIN_KINDS:
        raise SpaceError(f"{path}: '{key}' must be a value or one of {{{'|'.join(DOMAIN_KINDS)}: ...}}, got {value}")
    (kind, args), = value.items()
    if kind == "choice":
        if not isinstance(args, list) or not args:
            raise SpaceError(f"{path}: '{key}' choice needs a non-empty list, got {args!r}")
        for option in args:
            try:
                check(path, key, option)
            except SpaceError as exc:
                raise SpaceError(f"{exc} (one of its choices {args})") from None
        return {kind: list(args)}
    numbers = (
        isinstance(args, list)
        and len(args) == 2
        and all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args)
    )
    if not numbers:  # a bool is an int to Python, never a bound here
        raise SpaceError(f"{path}: '{key}' {kind} needs [low, high] numbers, got {args!r}")
    low, high = args
    if not low < high:
        raise SpaceError(f"{path}: '{key}' {kind} needs low < high, got [{low}, {high}]")
    if kind.startswith("log") and low <= 0:
        raise SpaceError(f"{path}: '{key}' {kind} needs low > 0, got {low}")
    # Both ends against the key's valid range, so no trial is ever proposed outside it.
    for end, value in (("low", low), ("high", high)):
        try:
            check(path, key, value)
        except SpaceError as exc:
            raise SpaceError(f"{exc} (the {end} end of its searched range {kind}: [{low}, {high}])") from None
    return {kind: [low, high]}


def make_search_settings(path: str, values: dict[str, Any]) -> SearchSettings:
    allowed = {f.name: f for f in fields(SearchSettings)}
    for key in values:
        if key not in allowed:
            hint = close_match(key, allowed, "search.{}")
            raise SpaceError(f"{path}: unknown key 'search.{key}'{hint}: 'search' takes {sorted(allowed)}")
    values = objectives_from_lists(path, values)
    settings = SearchSettings(**{k: tuple(v) if k in TUPLE_SETTINGS else v for k, v in values.items()})
    if settings.mode not in ("max", "min"):
        raise SpaceError(f"{path}: 'search.mode' must be max or min, got {settings.mode!r}")
    if settings.scheduler not in ("asha", "fifo"):
        raise SpaceError(f"{path}: 'search.scheduler' must be asha or fifo, got {settings.scheduler!r}")
    if settings.sampler not in ("tpe", "random"):
        raise SpaceError(f"{path}: 'search.sampler' must be tpe or random, got {settings.sampler!r}")
    from .leaderboard import RANK_BY

    if settings.rank_by not in RANK_BY:
        raise SpaceError(f"{path}: 'search.rank_by' must be one of {list(RANK_BY)}, got {settings.rank_by!r}")
    if settings.rank_by == "paired_lcb" and "real_only" not in settings.baselines:
        raise SpaceError(f"{path}: 'search.rank_by: paired_lcb' pairs every trial with the real_only baseline; "
                         f"add real_only to 'search.baselines' (got {list(settings.baselines)})")
    unknown = set(settings.baselines) - set(BASELINE_VALUES)
    if unknown:
        raise SpaceError(f"{path}: 'search.baselines' has unknown {sorted(unknown)}; use {sorted(BASELINE_VALUES)}")
    for key in ("num_samples", "max_concurrent", "grace_period", "reduction_factor"):
        value = getattr(settings, key)
        if key == "max_concurrent" and value == AUTO_CONCURRENCY:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise SpaceError(f"{path}: 'search.{key}' must be a whole number >= 1, got {getattr(settings, key)!r}")
    return settings


AUTO_CONCURRENCY = "auto"
"""search.max_concurrent / --max-concurrent: from the cluster's schedulable slots."""

TUPLE_SETTINGS = ("baselines", "objectives", "objective_modes")

MULTI_OBJECTIVE_NOTE = (
    "scheduler fifo: a multi-objective search runs every trial to the end (ASHA stops trials on one metric)"
)


def objectives_from_lists(path: str, values: dict[str, Any]) -> dict[str, Any]:
    """`metric: [a, b]` (with `mode: [max, min]`, or one mode for all) -> metric a, objectives
    (a, b), FIFO scheduler. A resolved space (metric a, objectives (a, b)) passes through."""
    metric, mode = values.get("metric", "val_auc"), values.get("mode", "max")
    if isinstance(mode, list) and not isinstance(metric, list):
        raise SpaceError(
            f"{path}: 'search.mode' is a list, so 'search.metric' must be a list of the same length, got {metric!r}"
        )
    if not isinstance(metric, list):
        objectives = list(values.get("objectives") or ())
        modes = list(values.get("objective_modes") or ())
        if objectives and (objectives[0] != metric or modes[:1] != [mode]):
            raise SpaceError(
                f"{path}: 'search.metric' / 'search.mode' ({metric!r}, {mode!r}) are not the first of "
                f"'search.objectives' {objectives} / 'search.objective_modes' {modes}; give 'search.metric' "
                "and 'search.mode' as lists to change the objectives"
            )
        return values
    modes = mode if isinstance(mode, list) else [mode] * len(metric)
    if not metric or not all(isinstance(m, str) and m for m in metric) or len(set(metric)) != len(metric):
        raise SpaceError(
            f"{path}: 'search.metric' must be a metric name or a list of distinct metric names, got {metric!r}"
        )
    if len(modes) != len(metric):
        raise SpaceError(
            f"{path}: 'search.mode' needs one mode per metric of 'search.metric' ({len(metric)}), got {mode!r}"
        )
    bad = [m for m in modes if m not in ("max", "min")]
    if bad:
        raise SpaceError(f"{path}: 'search.mode' must be max or min for every metric, got {bad}")
    out = {**values, "metric": metric[0], "mode": modes[0], "objectives": list(metric), "objective_modes": list(modes)}
    if len(metric) > 1:
        out["scheduler"] = "fifo"  # see MULTI_OBJECTIVE_NOTE
    return out


def load_space(path: str | Path) -> Space:
    path = str(path)
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise SpaceError(f"{path}: no such space file") from None
    except yaml.YAMLError as exc:
        raise SpaceError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(raw, dict):
        raise SpaceError(f"{path}: expected a mapping of sections, got {type(raw).__name__}")
    unknown = set(raw) - set(SECTIONS) - {"name", "search"}
    if unknown:
        hints = "".join(close_match(str(u), [*SECTIONS, "name", "search"]) for u in sorted(unknown, key=str))
        raise SpaceError(
            f"{path}: unknown section(s) {sorted(unknown, key=str)}{hints}; allowed: name, search, "
            f"{', '.join(sorted(SECTIONS))}"
        )
    fixed, domains = {}, {}
    for section in SECTIONS:
        values = raw.get(section) or {}
        if not isinstance(values, dict):
            raise SpaceError(f"{path}: '{section}' must be a mapping, got {values!r}")
        for name, value in values.items():
            for key, entry in space_entries(path, f"{section}.{name}", value):
                if isinstance(entry, dict):
                    if section in FIXED_SECTIONS:
                        raise SpaceError(
                            f"{path}: '{key}' cannot be searched: '{section}' is applied once before the search "
                            f"starts{FIXED_SECTIONS[section]}"
                        )
                    domains[key] = parse_domain(path, key, entry)
                else:
                    check(path, key, entry)
                    fixed[key] = entry
    search = make_search_settings(path, raw.get("search") or {})
    name = raw.get("name") or Path(path).stem
    check_name(path, "name", name)
    space = Space(path, name, fixed, domains, search)
    check_baselines(space)
    return space


def space_entries(path: str, key: str, value: Any) -> list[tuple[str, Any]]:
    """[(key, value)]; a mapping field ('synth.class_ratio': {0: 1.0, 1: {uniform: [0, 2]}}) gives
    one key per entry ('synth.class_ratio.0', ...), each fixed or searched on its own (Optuna
    proposes one value per key, never a mapping)."""
    if key not in MAPPING_KEYS:
        return [(key, value)]
    if not isinstance(value, dict) or not value or any(k in DOMAIN_KINDS for k in value):
        raise SpaceError(f"{path}: '{key}' must be a mapping of {MAPPING_KEYS[key]} -> a ratio or a searched "
                         f"domain, e.g. {{1: 1.0}} or {{1: {{uniform: [0, 2]}}}}, got {value!r}")
    return [(f"{key}.{entry}", v) for entry, v in value.items()]


def check_baselines(space: Space) -> None:
    try:
        # The fixed values together: checks between fields (preprocess clip_low < clip_high,
        # family-specific keys) only see one key at a time in `check`.
        TrialConfig.from_flat(space.fixed)
        space.baseline_points()  # raises a SpaceError naming what a listed baseline needs
    except ConfigError as exc:
        raise SpaceError(f"{space.path}: {exc}") from None
    check_metrics(space)


def check_metrics(space: Space) -> None:
    """'search.metric' (and every objective) must be something trials report: a typo such as
    'val_aucc' would otherwise end the search after the first fold with a Ray TuneError."""
    valid = trial_metric_names() + (GEN_METRIC_NAMES if space.logs_gen_metrics() else ())
    for key, names in (("search.metric", [space.search.metric]), ("search.objectives", space.search.objectives)):
        for name in names:
            if name in valid:
                continue
            if name in GEN_METRIC_NAMES:
                raise SpaceError(
                    f"{space.path}: '{key}' {name!r} is only reported with 'synth.gen_metrics: true'; "
                    "set it or choose another metric"
                )
            close = difflib.get_close_matches(str(name), valid, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise SpaceError(
                f"{space.path}: '{key}' must be a metric trials report, got {name!r}{hint} Valid: {', '.join(valid)}"
            )


def name_error(name: Any, label: str) -> str | None:
    """Why an experiment name cannot be used, or None. The name becomes a file name (the resume
    record `<storage>/<name>.gantune.json`) and a folder (artifacts), so it must not lead out of
    them. `label` is how the user gave it: "'name'" in a space file, "--experiment" on the CLI."""
    if not isinstance(name, str):
        return f"{label} must be a string, got {name!r}"
    problem = unsafe_name(name)
    if problem:
        return f"{label} {name!r} {problem}; it names files and folders, so use letters, digits, '-', '_' or '.'"
    return None


def check_name(where: str, key: str, name: Any) -> None:
    """SpaceError "<file>: 'name' '../x' contains '..'; ..." for an unusable experiment name."""
    if error := name_error(name, f"'{key}'"):
        raise SpaceError(f"{where}: {error}")
