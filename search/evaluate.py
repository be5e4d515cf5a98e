"""`gantune evaluate`: the one-shot test evaluation of an experiment's latest search.

The evaluated trial is by default the one `gantune promote` would register and gate
(promote.candidate: the best trial that finished every fold with a generator), so both judge the
same trial; `--trial best` takes the search's best, `--trial ID` any trial. Four methods, all with
that trial's classifier and step budget: `best_config` (the trial's configuration as it is),
`real_only` (no synthetic image, no augmentation), `classic_aug` and `trivial_aug` (no synthetic
image; classic or TrivialAugment-style augmentation, each with the augment section of the search's
best trial of that baseline that finished every fold, or the default policy if none did). Each
is refitted with the same seeds 0..S-1 (10 by default), so the seeds pair the methods, and scored
once on the untouched test split. The test split is read here and nowhere else.

Refit, on the whole training pool, never by discarding part of it:
- a MedMNIST .npz (official splits): train on the official train split, early-stop on the
  official val split. That is how MedMNIST's own benchmarks are trained, so the numbers compare
  with the published ones, and the val split is small (78 BreastMNIST images) and already
  separate from train;
- any other dataset (no official val split): train on the whole pool for a fixed step count, the
  one chosen in cross-validation (the best trial's `val_clf_best_step`, the mean over folds of the
  classifier step with the lowest val loss; `classifier.steps` if the trial did not log it), with
  no early stop. Holding part of a small pool out only to early-stop would cost a third of the
  training images; the step count the folds chose is the early stop, decided without the test split.
GANs, refiners and filters see the refit's training images only (the same `fit_pipeline` as every
fold of the search).

Statistics of the best config against the strongest baseline (highest mean test AUC; picking the
hardest comparator on the test split can only make the comparison harder):
- per method, mean ± sd over seeds of every metric; the paired t interval over seeds of the
  difference (`paired_delta_<metric>`, `_ci_low`, `_ci_high`);
- on the seed-averaged predictions (a seed ensemble per method): a paired stratified bootstrap over
  test images of the AUC difference (`paired_delta_auc_bootstrap_ci_low`/`_high`), DeLong's test
  (`delong_p`; binary only) and the sensitivity of each method at the baseline's specificity
  (`test_<method>_sens_at_spec`, `delta_sens_at_spec` with its bootstrap interval; binary only).

Power, before any refit: the smallest paired test-AUC difference the test split can show at 80 %
power (`mde_auc`, `stats.min_detectable_auc_delta`, from its class counts and the baseline's
cross-validated AUC). A difference smaller than that with an interval straddling 0 is reported as
"underpowered", not as a small gain.

The data-efficiency study (`--train-fraction 0.25,0.5,1 --draws K`, search/study.py): every method
refitted on K stratified subsample draws per fraction x the same seeds (the GAN sees only its
draw and is trained once per draw); per fraction, best_config minus the strongest baseline at
that fraction with a hierarchical bootstrap interval (`frac_<f>_delta_auc`, `_lo`, `_hi`,
`frac_<f>_train_images`; logged at fraction 1 by every evaluation, the interval the promotion gate
reads), plotted in `data_efficiency.png`. Seeds pair the methods within a draw: with K draws, the
paired units of every statistic above are the K x S (draw, seed) refits."""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from gantune.trainables.config import TrialConfig
from gantune.trainables.data.augment import AugmentConfig
from gantune.trainables.data.datasets import DataSplits, ImageDataset
from gantune.trainables.gans.cache import GeneratorCache
from gantune.trainables.metrics import METRIC_NAMES
from gantune.trainables.trial import enhance, fit_pipeline, score

from . import stats, study
from .bars import progress_bar, write_line
from .leaderboard import format_table as text_table
from .leaderboard import fixed_folds, rank_for_selection, run_complete
from .runs import (
    add_fold_values,
    experiment_and_latest_search,
    read_json,
    resolved_space,
    trial_config,
    trial_id_of,
    trial_runs,
)
from .stats import mean_sd, paired_ci
from .study import MethodRuns, Unit

METHODS = ("best_config", "real_only", "classic_aug", "trivial_aug")
BASELINES = METHODS[1:]
AUGMENTED_BASELINES = {"classic_aug": "classic", "trivial_aug": "trivial"}
"""Augmented baseline -> its augment.policy."""
TABLE_METRICS = ("auc", "accuracy", "sensitivity", "specificity")
DEFAULT_SEEDS = 10
BOOTSTRAP_REPLICATES = study.BOOTSTRAP_REPLICATES
BOOTSTRAP_SEED = study.BOOTSTRAP_SEED
CONFIDENCE = stats.CONFIDENCE


class EvaluateError(ValueError):
    """No such experiment, no finished search, or a search whose best trial cannot be rebuilt."""


def parse_fractions(text: str) -> tuple[float, ...]:
    """'0.25,0.5,1' -> (0.25, 0.5, 1.0), sorted, 1 always included (the headline evaluation)."""
    try:
        values = {float(v) for v in text.split(",") if v.strip()}
    except ValueError:
        raise argparse.ArgumentTypeError(f"--train-fraction: expected comma-separated numbers, got {text!r}") from None
    bad = [v for v in values if not 0 < v <= 1]
    if bad:
        raise argparse.ArgumentTypeError(f"--train-fraction: every fraction must be in (0, 1], got {sorted(bad)}")
    return tuple(sorted(values | {1.0}))


def positive_int(flag: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag}: expected a whole number, got {text!r}") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"{flag}: must be >= 1, got {value}")
        return value

    return parse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--experiment", required=True, help="MLflow experiment whose latest finished search to evaluate")
    p.add_argument(
        "--split", choices=("test",), default="test", help="split scored once (only 'test': the untouched split)"
    )
    p.add_argument("--seeds", type=int, default=DEFAULT_SEEDS,
                   help=f"seeds 0..S-1, the same for every method (default: {DEFAULT_SEEDS})")
    p.add_argument("--train-fraction", type=parse_fractions, default=(1.0,), metavar="F[,F...]",
                   help="also refit on these stratified fractions of the training images and plot test AUC "
                        "against the number of real images, e.g. 0.25,0.5,1 (default: 1 only)")
    p.add_argument("--draws", type=positive_int("--draws"), default=1, metavar="K",
                   help="independent stratified subsample draws per train fraction, each with its own generator; "
                        "every seed is refitted on every draw (default: 1)")
    p.add_argument("--cpus", type=positive_int("--cpus"), default=None, metavar="N",
                   help="torch threads of the refits (default: the CPUs this process may use; on a machine "
                        "shared with other jobs, 1 is often several times faster)")
    p.add_argument("--data", help="dataset path; overrides the searched data.path (must be the same dataset)")
    p.add_argument(
        "--dry-run", action="store_true", help="print the configurations and the refit plan, and exit without training"
    )
    p.add_argument("--trial", metavar="ID", help=TRIAL_HELP)
    p.add_argument("--storage-path", default="ray_results",
                   help="the search's storage path: its generator cache (STORAGE_PATH/gan_cache) is reused")
    cache = p.add_mutually_exclusive_group()
    cache.add_argument(
        "--gan-cache", metavar="URI", help="generator cache location, when the search ran with --gan-cache"
    )
    cache.add_argument("--no-gan-cache", action="store_true", help="train every GAN, reuse none")


# --- what to evaluate -------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """The search and trial an evaluation starts from."""

    experiment_id: str
    search: object
    """The search's parent MLflow run."""
    trial: object
    """The evaluated trial's MLflow run (by default the one `gantune promote` would register)."""
    cfg: TrialConfig
    """The evaluated trial's configuration, rebuilt from its config/trial_config.json."""
    resolved: dict
    """The search's config/resolved_space.json."""
    augments: dict[str, AugmentConfig]
    """Augmented baseline -> the augment section it is refitted with."""
    augment_sources: dict[str, str]
    """Augmented baseline -> where its augment section came from (a trial id, or the default)."""
    why: str = ""
    """Why this trial, in one line (printed before any refit)."""


def ranked_trials(client, experiment_id: str, search, resolved: dict, baseline: str | None = None,
                  synthetic_only: bool = False) -> list:
    """The search's trial runs (only those of one baseline, or with synthetic_only none of them)
    best first as promote ranks them: those that finished every fold, by the space's
    search.rank_by (leaderboard.rank_for_selection); the usable ones by mean when none did."""
    extra = f"tags.`gantune.baseline` = '{baseline}'" if baseline else ""
    settings = resolved["search"]
    runs = add_fold_values(client, trial_runs(client, experiment_id, search.info.run_id, extra), settings["metric"])
    if synthetic_only:
        runs = [r for r in runs if not r.data.tags.get("gantune.baseline")]
    return rank_for_selection(runs, settings["metric"],
                              settings["mode"], resolved.get("fixed", {}), settings.get("rank_by", "mean"))


def baseline_augment(best: TrialConfig, policy: str, searched: TrialConfig | None) -> AugmentConfig:
    """The searched baseline trial's augment section (switched on), else the best trial's own
    ranges with augmentation on at the given policy."""
    base = searched.augment if searched is not None else best.augment
    return replace(base, enabled=True, policy=policy)


BEST_GAN = "best-gan"
"""--trial value, the default: the trial `gantune promote` would register (promote.candidate: the
best complete trial with a generator). Kept as a name for scripts written when it was not the default."""
BEST = "best"
"""--trial value: the search's best trial, whatever it is (often a baseline, whose refit then equals real_only)."""
TRIAL_HELP = (f"evaluate this trial (its gantune.trial_id); '{BEST}': the search's best trial, whatever it is; "
              f"default ('{BEST_GAN}'): the trial `gantune promote` would register (the best trial that finished "
              f"every fold with a generator)")
"""--trial's help text."""


def choose_trial(client, experiment_id: str, search, resolved: dict, wanted: str | None) -> tuple[object, str]:
    """(the trial run to evaluate, why it, in one line): --trial ID, the search's best (--trial
    best: tagged when it finished, else ranked here), or by default the trial promote would
    register (promote.candidate, so evaluate and promote judge the same trial)."""
    from gantune.trainables.tracking import find_trial_run

    from .promote import candidate

    name = search.info.run_id
    if wanted and wanted not in (BEST_GAN, BEST):
        trial = find_trial_run(client, experiment_id, search.info.run_id, wanted)
        if trial is None:
            raise EvaluateError(f"--trial {wanted!r}: no trial of search {name} has that gantune.trial_id")
        return trial, f"chosen with --trial {wanted}"
    if wanted == BEST:
        return best_trial(client, experiment_id, search, resolved)
    chosen = candidate(client, experiment_id, search)
    if chosen.best is not None:
        return chosen.best, chosen.why()
    # Promote would register none (every trial with a generator was stopped early): evaluate the
    # best trial that adds synthetic images anyway, saying so, rather than refuse a search that
    # only a longer budget could fix; promote refuses it all the same.
    ranked = ranked_trials(client, experiment_id, search, resolved, synthetic_only=True)
    if not ranked:
        raise EvaluateError(f"search {name} has no usable trial that adds synthetic images ({chosen.why()}); "
                            f"--trial {BEST} or --trial ID evaluates another")
    done = ranked[0].data.metrics.get("folds_done", 0)
    return ranked[0], (f"{chosen.why()}; evaluating instead the best trial that adds synthetic images, by "
                       f"{resolved['search']['metric']} over the {done:g} of {chosen.total_folds} folds it ran")


def best_trial(client, experiment_id: str, search, resolved: dict) -> tuple[object, str]:
    """--trial best: the search's best trial (tagged when the search finished, else ranked here)."""
    from gantune.trainables.tracking import find_trial_run

    best_id = search.data.tags.get("gantune.best_trial_id")
    trial = find_trial_run(client, experiment_id, search.info.run_id, best_id) if best_id else None
    if trial is not None:
        return trial, f"--trial {BEST}: the search's best trial (tag gantune.best_trial_id)"
    ranked = ranked_trials(client, experiment_id, search, resolved)  # a search that ended before tagging it
    if not ranked:
        raise EvaluateError(f"search {search.info.run_id} has no trial with a finite "
                            f"'{resolved['search']['metric']}'")
    return ranked[0], f"--trial {BEST}: the search's best trial, ranked by {resolved['search']['metric']}"


def baseline_source(client, experiment_id: str, search, resolved: dict, name: str, policy: str,
                    cfg: TrialConfig) -> tuple[AugmentConfig, str]:
    """(augment section, where it came from) of an augmented baseline: the best trial of that
    baseline that finished every fold. A trial the scheduler stopped early is never the source:
    its settings were measured on fewer folds (a lucky one-fold value could pick them). Without a
    complete one the baseline runs the default policy, and the origin says why, rather than a
    refusal: a baseline's default policy is a fair comparator (TrivialAugment has no settings to
    tune by design), and a refusal would leave no test evaluation until the whole search reran."""
    settings = resolved["search"]
    total, _ = fixed_folds(resolved.get("fixed", {}))
    ranked = ranked_trials(client, experiment_id, search, resolved, baseline=name)
    complete = [r for r in ranked if run_complete(r, settings["metric"], total)]
    if complete:
        return baseline_augment(cfg, policy, trial_config(client, complete[0], EvaluateError)), (
            f"trial {trial_id_of(complete[0])}")
    if ranked:
        stopped = ", ".join(f"{trial_id_of(r)} after {r.data.metrics.get('folds_done', 0):g}" for r in ranked)
        origin = (f"default {policy} policy (no {name} trial finished all {total} folds; stopped early, not used: "
                  f"{stopped})")
    else:
        origin = f"default {policy} policy (the search had no {name} baseline)"
    return baseline_augment(cfg, policy, None), origin


def find_source(client, experiment_name: str, wanted_trial: str | None = None) -> Source:
    experiment, search = experiment_and_latest_search(client, experiment_name, EvaluateError)
    resolved = resolved_space(client, search.info.run_id, EvaluateError)
    trial, why = choose_trial(client, experiment.experiment_id, search, resolved, wanted_trial)
    cfg = trial_config(client, trial, EvaluateError)
    augments, origins = {}, {}
    for name, policy in AUGMENTED_BASELINES.items():
        augments[name], origins[name] = baseline_source(client, experiment.experiment_id, search, resolved, name,
                                                        policy, cfg)
    return Source(experiment.experiment_id, search, trial, cfg, resolved, augments, origins, why)


def header_text(experiment: str, source: Source) -> str:
    """Which trial is evaluated and why (its own line), then where every method's settings come from."""
    return (
        f"Evaluating trial {trial_id_of(source.trial)} (run {source.trial.info.run_id}): {source.why}\n"
        f"Experiment '{experiment}', search run {source.search.info.run_id}; "
        + "; ".join(f"{name} augmentation from {origin}" for name, origin in source.augment_sources.items())
    )


def method_configs(best: TrialConfig, augments: dict[str, AugmentConfig]) -> dict[str, TrialConfig]:
    """The evaluated methods: the best trial's configuration as it is; the same with no synthetic
    image and no augmentation; the same with no synthetic image and each baseline augmentation.
    Classifier, step budget and everything else stay the best trial's."""
    no_synth = replace(best.synth, ratio=0.0, class_ratio=())  # per-class ratios would still add images
    configs = {
        "best_config": best,
        "real_only": replace(best, synth=no_synth, augment=replace(best.augment, enabled=False)),
    }
    for name in AUGMENTED_BASELINES:
        configs[name] = replace(best, synth=no_synth, augment=augments[name])
    return configs


# --- refit plan ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RefitPlan:
    """Which pool images every refit trains on, what (if anything) early-stops it, and for how long."""

    kind: str
    """'official_val' (MedMNIST: train on train, early-stop on val) or 'cv_steps' (whole pool,
    fixed step count from cross-validation, no early stop)."""
    train_idx: np.ndarray
    """Pool indices of the training images (at train fraction 1)."""
    early_stop_idx: np.ndarray | None
    """Pool indices of the early-stop images; None = no early stop."""
    steps: int
    """Classifier steps of every method (the best trial's budget, or the step count CV chose)."""
    reason: str
    """One line for the output and the run's params."""


def refit_plan(data: DataSplits, trial, cfg: TrialConfig) -> RefitPlan:
    n = len(data.pool)
    if data.official_val is not None and len(data.official_val):
        val = np.asarray(data.official_val)
        return RefitPlan("official_val", np.setdiff1d(np.arange(n), val), val, cfg.classifier.steps,
                         f"official splits: train on the {n - len(val)} official train images, early-stop on the "
                         f"{len(val)} official val images (at most {cfg.classifier.steps} classifier steps)")
    chosen = trial.data.metrics.get("val_clf_best_step")
    if chosen is not None and math.isfinite(chosen) and chosen >= 1:
        steps = min(cfg.classifier.steps, max(1, round(chosen)))
        origin = f"the best trial's val_clf_best_step {chosen:.1f}"
    else:
        steps, origin = cfg.classifier.steps, "classifier.steps (the best trial logged no val_clf_best_step)"
    return RefitPlan("cv_steps", np.arange(n), None, steps,
                     f"no official val split: train on all {n} pool images for {steps} classifier steps "
                     f"({origin}), no early stop")


# --- refit and score ----------------------------------------------------------------------------


def enhanced(data: ImageDataset, cfg: TrialConfig, device: torch.device) -> ImageDataset:
    """The trial's per-image enhancement, as run_trial applies it to the pool."""
    data = data.to(device)
    return ImageDataset(enhance(data.images, cfg.enhance), data.labels, data.class_names, data.source)


Progress = Callable[[str], None]


@dataclass(frozen=True)
class RefitResults:
    """Every refit of an evaluation: method runs per train fraction, in `units` order."""

    by_fraction: dict[float, dict[str, MethodRuns]]
    sizes: dict[float, int]
    """Train fraction -> real training images of each draw."""
    units: list[Unit]
    draws: int
    labels: np.ndarray
    """(N_test,) test labels."""


def evaluate_methods(
    configs: dict[str, TrialConfig], data: DataSplits, plan: RefitPlan, seeds: list[int], device: torch.device,
    fractions: tuple[float, ...] = (1.0,), progress: Progress = print, gan_cache: GeneratorCache | None = None,
    draws: int = 1,
) -> RefitResults:
    """Every method refitted per fraction, draw and seed with plan's images and step count, scored
    on data.test (search/study.py says what a draw is).

    Draw d trains the GAN(s) with seed d on its own images, so the seeds of a draw share its
    generator (through the generator cache) and the draws carry the generator's variation; seed s
    drives the classifier, the synthetic draws and its augmentation. A second evaluate of the
    search (more seeds, other fractions) reuses every GAN an earlier one trained."""
    first = next(iter(configs.values()))
    labels = data.pool.labels.cpu().numpy()
    slots = study.units(draws, seeds)
    results = {f: {m: MethodRuns() for m in configs} for f in fractions}
    sizes = {}
    total, done = len(fractions) * len(configs) * len(slots), 0
    reused: dict[tuple, tuple[dict[str, float], np.ndarray]] = {}
    with progress_bar(total, "evaluate", "fit") as bar:
        for fraction in fractions:
            for draw in range(draws):
                train_idx = study.draw_subset(plan.train_idx, labels, fraction, first.data.seed, draw)
                sizes[fraction] = len(train_idx)
                for method, cfg in configs.items():
                    cfg = replace(cfg, classifier=replace(cfg.classifier, steps=plan.steps))
                    pool, test = enhanced(data.pool, cfg, device), enhanced(data.test, cfg, device)
                    train = pool.subset(train_idx)
                    early_stop = pool.subset(plan.early_stop_idx) if plan.early_stop_idx is not None else None
                    for seed in seeds:
                        bar.set_postfix_str(f"{method} draw {draw} seed {seed}")
                        start = time.monotonic()
                        # A method without a generator depends only on its images and seed: at
                        # fraction 1 every draw holds the same images, so its first refit stands.
                        key = (method, seed, train_idx.tobytes()) if cfg.baseline_name() else None
                        note = " (the same images and seed as an earlier draw: reused)" if key in reused else ""
                        if note:
                            metrics, proba = reused[key]
                        else:
                            model, _, _ = fit_pipeline(replace(cfg, seed=seed), train, early_stop, device, seed,
                                                       gan_cache, gan_seed=draw)
                            metrics, _, proba = score(model, test, cfg.data.positive_class)
                            if key is not None:
                                reused[key] = metrics, proba
                        results[fraction][method].metrics.append(metrics)
                        results[fraction][method].proba.append(proba)
                        done += 1
                        where = "" if fraction == 1 else f" ({len(train_idx)} training images)"
                        which = f"draw {draw} seed {seed}" if draws > 1 else f"seed {seed}"
                        progress(f"[{done}/{total}] {method} {which}{where}: test auc {metrics['auc']:.4f}, "
                                 f"accuracy {metrics['accuracy']:.4f} ({time.monotonic() - start:.0f} s){note}")
                        bar.update(1)
    # Appended draw by draw, seed by seed within each method: the order of `slots` (units).
    return RefitResults(results, sizes, slots, draws, data.test.labels.cpu().numpy())


# --- statistics -------------------------------------------------------------------------------


def ensemble_auc(labels: np.ndarray, proba: np.ndarray, positive: int) -> float:
    """AUC of (N, K) probabilities: binary on the positive class, else macro one-vs-rest."""
    if proba.shape[1] == 2:
        return stats.auc(labels == positive, proba[:, positive])
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, proba, multi_class="ovr", average="macro", labels=list(range(proba.shape[1]))))


@dataclass(frozen=True)
class Evaluation:
    runs: dict[str, MethodRuns]
    """method -> its refits at train fraction 1."""
    labels: np.ndarray
    """(N_test,) test labels."""
    seeds: list[int]
    positive: int
    """The positive class (sensitivity, DeLong)."""
    baseline: str
    """The strongest baseline (highest mean test `ranking_metric`), the one best_config is compared with."""
    ranking_metric: str

    def values(self, method: str, metric: str) -> list[float]:
        return [r[metric] for r in self.runs[method].metrics]

    def summary(self, method: str, metric: str) -> tuple[float, float]:
        return mean_sd(self.values(method, metric))

    def delta(self, metric: str) -> tuple[float, float, float]:
        return paired_ci(self.values("best_config", metric), self.values(self.baseline, metric))

    def ensemble(self, method: str) -> np.ndarray:
        """(N_test, K) seed-averaged probabilities."""
        return np.mean(self.runs[method].proba, axis=0)

    @property
    def binary(self) -> bool:
        return self.ensemble("best_config").shape[1] == 2

    def bootstrap(self) -> stats.Bootstrap:
        positive = self.positive
        return stats.paired_bootstrap(
            self.labels, self.ensemble("best_config"), self.ensemble(self.baseline),
            lambda y, p: ensemble_auc(y, p, positive), BOOTSTRAP_REPLICATES, BOOTSTRAP_SEED, CONFIDENCE,
        )

    def delong(self) -> stats.DeLong | None:
        if not self.binary:
            return None
        y = self.labels == self.positive
        return stats.delong(
            y, self.ensemble("best_config")[:, self.positive], self.ensemble(self.baseline)[:, self.positive]
        )

    def baseline_specificity(self) -> float:
        """The strongest baseline's specificity at its own operating point (argmax of its seed ensemble)."""
        p = self.ensemble(self.baseline)
        return stats.specificity_at(self.labels == self.positive, p.argmax(axis=1) == self.positive)

    def sens_at_spec(self) -> tuple[dict[str, float], stats.Bootstrap]:
        """Each method's sensitivity at the baseline's specificity (seed ensembles), and the paired
        bootstrap of best_config minus the baseline (the target specificity held fixed)."""
        target, pos = self.baseline_specificity(), self.positive

        def sens(y, p):
            return stats.sensitivity_at_specificity(y == pos, p[:, pos], target)

        per_method = {m: sens(self.labels, self.ensemble(m)) for m in self.runs}
        boot = stats.paired_bootstrap(self.labels, self.ensemble("best_config"), self.ensemble(self.baseline), sens,
                                      BOOTSTRAP_REPLICATES, BOOTSTRAP_SEED, CONFIDENCE)
        return per_method, boot

    def metrics(self) -> dict[str, float]:
        """The evaluation run's metrics, stable names (see the module docstring)."""
        out = {}
        for method in self.runs:
            for metric in METRIC_NAMES:
                out[f"test_{method}_{metric}_mean"], out[f"test_{method}_{metric}_sd"] = self.summary(method, metric)
            out[f"test_{method}_ensemble_auc"] = ensemble_auc(self.labels, self.ensemble(method), self.positive)
        for metric in METRIC_NAMES:
            (
                out[f"paired_delta_{metric}"],
                out[f"paired_delta_{metric}_ci_low"],
                out[f"paired_delta_{metric}_ci_high"],
            ) = self.delta(metric)
        boot = self.bootstrap()
        out["ensemble_delta_auc"] = boot.delta
        out["paired_delta_auc_bootstrap_ci_low"], out["paired_delta_auc_bootstrap_ci_high"] = boot.low, boot.high
        test = self.delong()
        if test is not None:
            out.update(delong_p=test.p, delong_z=test.z, delong_se=test.se)
            per_method, sens_boot = self.sens_at_spec()
            out["baseline_spec"] = self.baseline_specificity()
            out.update({f"test_{m}_sens_at_spec": v for m, v in per_method.items()})
            out["delta_sens_at_spec"] = sens_boot.delta
            out["delta_sens_at_spec_bootstrap_ci_low"], out["delta_sens_at_spec_bootstrap_ci_high"] = (
                sens_boot.low,
                sens_boot.high,
            )
        return out


def compare(runs: dict[str, MethodRuns], labels: np.ndarray, seeds: list[int], positive: int,
            ranking_metric: str = "auc") -> Evaluation:
    baselines = [b for b in BASELINES if b in runs]
    strongest = max(baselines, key=lambda b: mean_sd([r[ranking_metric] for r in runs[b].metrics])[0])
    return Evaluation(runs, labels, seeds, positive, strongest, ranking_metric)


def ranking_metric_of(search_metric: str) -> str:
    """The test metric matching the search's objective (val_auc -> auc); auc for anything else."""
    name = search_metric.removeprefix("val_")
    return name if name in TABLE_METRICS else "auc"


# --- output -----------------------------------------------------------------------------------


def fmt(mean: float, sd: float) -> str:
    return f"{mean:.4f} ± {sd:.4f}" if not math.isnan(sd) else f"{mean:.4f}"


def interval(low: float, high: float) -> str:
    return f"[{low:+.4f}, {high:+.4f}]" if not math.isnan(low) else "(no interval)"


def format_table(ev: Evaluation, split: str, metrics: dict[str, float]) -> str:
    rows = [{"method": m, **{k: fmt(*ev.summary(m, k)) for k in TABLE_METRICS},
             "ensemble_auc": f"{metrics[f'test_{m}_ensemble_auc']:.4f}"} for m in ev.runs]
    n = len(ev.seeds)
    lines = [
        (
            f"{split} split, mean ± sd over {n} seed{'s' if n > 1 else ''} "
            f"({', '.join(map(str, ev.seeds))}), same seeds for "
            f"every method; ensemble_auc = AUC of the seed-averaged predictions:"
        ),
        text_table(rows, ["method", *TABLE_METRICS, "ensemble_auc"]),
        "",
        f"best_config - {ev.baseline} (the strongest baseline by mean test {ev.ranking_metric}):",
        f"  seed-level paired difference, {CONFIDENCE:.0%} t interval over {n} paired seed{'s' if n > 1 else ''}:",
    ]
    for metric in TABLE_METRICS:
        mean, low, high = ev.delta(metric)
        lines.append(f"    {metric:<12} {mean:+.4f}  {interval(low, high)}")
    lines.append(
        f"  seed ensembles: AUC difference {metrics['ensemble_delta_auc']:+.4f}, paired bootstrap over test images "
        f"({BOOTSTRAP_REPLICATES} stratified resamples) "
        f"{interval(metrics['paired_delta_auc_bootstrap_ci_low'], metrics['paired_delta_auc_bootstrap_ci_high'])}"
    )
    if "delong_p" in metrics:
        lines.append(
            f"  DeLong's test on the seed ensembles: z = {metrics['delong_z']:+.3f}, p = {metrics['delong_p']:.4f}"
        )
        lines.append(
            f"  sensitivity at the {ev.baseline} specificity {metrics['baseline_spec']:.4f}: "
            + ", ".join(f"{m} {metrics[f'test_{m}_sens_at_spec']:.4f}" for m in ev.runs)
            + f"; difference {metrics['delta_sens_at_spec']:+.4f} "
            + interval(metrics["delta_sens_at_spec_bootstrap_ci_low"], metrics["delta_sens_at_spec_bootstrap_ci_high"])
        )
    return "\n".join(lines)


def summary_csv(ev: Evaluation) -> str:
    """Long format: one row per (method, metric) with mean and sd, then the paired deltas with CI."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["row", "metric", "seeds", "mean", "sd", "ci_low", "ci_high"])
    for method in ev.runs:
        for metric in METRIC_NAMES:
            writer.writerow([method, metric, len(ev.seeds), *ev.summary(method, metric), "", ""])
    for metric in METRIC_NAMES:
        mean, low, high = ev.delta(metric)
        writer.writerow([f"best_config-{ev.baseline}", metric, len(ev.seeds), mean, "", low, high])
    return buffer.getvalue()


def per_seed_csv(ev: Evaluation) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["method", "seed", *METRIC_NAMES])
    for method, runs in ev.runs.items():
        for seed, metrics in zip(ev.seeds, runs.metrics):
            writer.writerow([method, seed, *(metrics[m] for m in METRIC_NAMES)])
    return buffer.getvalue()


def predictions_npz(refits: RefitResults, seeds: list[int]) -> bytes:
    """Per-refit test probabilities, to recompute any statistic: proba_<method>_f<fraction> is
    (draws x seeds, N_test, K) in draw-major order."""
    buffer = io.BytesIO()
    arrays = {"labels": refits.labels, "seeds": np.asarray(seeds),
              "draws": np.asarray([u.draw for u in refits.units])}
    for fraction, by_method in refits.by_fraction.items():
        for method, runs in by_method.items():
            arrays[f"proba_{method}_f{fraction:g}"] = np.stack(runs.proba)
    np.savez(buffer, **arrays)
    return buffer.getvalue()


@dataclass(frozen=True)
class Power:
    """What the test split can resolve, computed before any refit."""

    mde: float
    """Smallest paired test-AUC difference detectable at 80 % power, two-sided 5 % (nan: not binary)."""
    text: str


def test_power(data: DataSplits, positive: int, baseline_auc: float) -> Power:
    counts = data.test.class_counts()
    if len(counts) != 2:
        return Power(math.nan, f"power: not computed for {len(counts)} classes (binary tasks only; data.merge makes "
                               "one)")
    n_pos, n_neg = counts[positive], counts[1 - positive]
    auc = min(max(baseline_auc, 0.5), 0.99) if math.isfinite(baseline_auc) else 0.85
    mde = stats.min_detectable_auc_delta(auc, n_pos, n_neg)
    return Power(mde, (
        f"power: the test split ({n_pos} positive, {n_neg} negative) can show a paired AUC difference of "
        f"{mde:.3f} or more at {stats.MDE_POWER:.0%} power (two-sided alpha {1 - CONFIDENCE:.2f}, baseline AUC "
        f"{auc:.3f}, correlation {stats.MDE_CORRELATION} between the two models' AUCs; binormal model); a smaller "
        "difference whose interval includes 0 is reported as underpowered, not as a gain"))


def baseline_cv_auc(client, source: Source) -> float:
    """The best baseline trial's cross-validated val_auc: the AUC the power figure assumes."""
    runs = trial_runs(client, source.experiment_id, source.search.info.run_id, "tags.`gantune.baseline` != ''")
    values = [r.data.metrics.get("val_auc", math.nan) for r in runs]
    finite = [v for v in values if math.isfinite(v)]
    return max(finite) if finite else math.nan


def log_evaluation(client, source: Source, ev: Evaluation, metrics: dict[str, float], split: str, table: str,
                   plan: RefitPlan, configs: dict[str, TrialConfig], refits: RefitResults,
                   fractions: list[study.FractionResult], power: Power, seeds: list[int]) -> str:
    """An MLflow run nested under the search's parent run; returns its id."""
    from mlflow.entities import Metric, Param

    trial_id = trial_id_of(source.trial)
    run = client.create_run(source.experiment_id, tags={
        "gantune.role": "evaluation",
        "mlflow.parentRunId": source.search.info.run_id,
        "mlflow.runName": f"evaluate-{split}-{trial_id}",
    })
    run_id = run.info.run_id
    params = {
        "split": split,
        "seeds": ",".join(map(str, seeds)),
        "draws": refits.draws,
        "source_trial_id": trial_id,
        "source_trial_run_id": source.trial.info.run_id,
        "search_run_id": source.search.info.run_id,
        "better_baseline": ev.baseline,
        "refit": plan.kind,
        "refit_reason": plan.reason,
        "refit_train_images": len(plan.train_idx),
        "early_stop_images": 0 if plan.early_stop_idx is None else len(plan.early_stop_idx),
        "classifier_steps": plan.steps,
        "train_fractions": ",".join(f"{f:g}" for f in refits.by_fraction),
        "bootstrap_replicates": BOOTSTRAP_REPLICATES,
        "mde_power": stats.MDE_POWER,
        "mde_correlation": stats.MDE_CORRELATION,
        **{f"{name}_augment_from": origin for name, origin in source.augment_sources.items()},
    }
    now = int(1000 * time.time())
    study_metrics = {k: v for r in fractions for k, v in r.metrics().items()}
    logged = [Metric(k, v, now, 0) for k, v in {**metrics, **study_metrics, "mde_auc": power.mde}.items()
              if math.isfinite(v)]
    # The data-efficiency curve as metric histories too: step = real training images.
    logged += [Metric(f"efficiency_{m}_auc", mean, now, r.train_images)
               for r in fractions for m, (mean, _) in r.aucs.items()]
    client.log_batch(run_id, metrics=logged, params=[Param(k, str(v)[:6000]) for k, v in params.items()])
    client.log_text(run_id, table + "\n", "evaluation.txt")
    client.log_text(run_id, summary_csv(ev), "evaluation.csv")
    client.log_text(run_id, per_seed_csv(ev), "evaluation_per_seed.csv")
    with tempfile.TemporaryDirectory() as tmp:
        npz = Path(tmp, "predictions.npz")
        npz.write_bytes(predictions_npz(refits, seeds))
        client.log_artifact(run_id, str(npz))
        if len(fractions) > 1:
            title = f"trial {trial_id}: {refits.draws} draw(s) x {len(seeds)} seed(s) per fraction"
            client.log_artifact(run_id, str(study.study_plot(fractions, Path(tmp, "data_efficiency.png"), title)))
    rows = study.study_rows(fractions, power.mde)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    client.log_text(run_id, buffer.getvalue(), "data_efficiency.csv")
    if plan.early_stop_idx is not None:  # the pool images that early-stop every refit (pool order)
        client.log_text(run_id, "\n".join(map(str, plan.early_stop_idx.tolist())) + "\n", "early_stop_pool_indices.txt")
    for method, cfg in configs.items():
        client.log_dict(run_id, cfg.to_flat(), f"config/{method}.json")
    client.set_terminated(run_id, status="FINISHED")
    return run_id


# --- the command ----------------------------------------------------------------------------


def load_search_data(source: Source, data_path: str | None) -> DataSplits:
    """The searched dataset (or --data), loaded as the search loaded it: same preprocessing, and
    the same fixed test split for datasets without an official one."""
    from gantune.trainables.data.datasets import DatasetError

    from .dataset import load_for_config, resolve_data_path

    cfg = source.cfg
    path = Path(data_path) if data_path else resolve_data_path(cfg.data.path, source.resolved.get("space_file", "."))
    if not path.exists():
        flag = "--data" if data_path else f"the search's data.path {cfg.data.path!r}"
        raise EvaluateError(f"{path}: {flag} does not exist; pass --data PATH")
    try:
        data, _ = load_for_config(path, cfg)
    except DatasetError as exc:
        raise EvaluateError(str(exc)) from exc
    return data


def check_same_data(client, source: Source, data: DataSplits) -> None:
    """Refuse a dataset whose pool differs from the searched one (a wrong --data)."""
    try:
        summary = read_json(client, source.search.info.run_id, "data/summary.json", EvaluateError)
    except EvaluateError:
        return  # a search that did not log its data summary: nothing to compare with
    if summary.get("pool_class_counts") not in (None, data.pool.class_counts()):
        raise EvaluateError(
            f"the dataset's pool class counts {data.pool.class_counts()} differ from the searched "
            f"{summary['pool_class_counts']}: evaluate the dataset the search ran on"
        )


def evaluate(tracking_uri: str, experiment: str, split: str = "test", seeds: int = DEFAULT_SEEDS,
             data_path: str | None = None, progress: Progress = print, dry_run: bool = False,
             fractions: tuple[float, ...] = (1.0,), gan_cache: str | None = None,
             trial: str | None = None, draws: int = 1, cpus: int | None = None) -> tuple[str, str | None]:
    """(printable text, evaluation run id (None on a dry run))."""
    from mlflow.tracking import MlflowClient

    if seeds < 1:
        raise EvaluateError(f"--seeds must be >= 1, got {seeds}")
    if draws < 1:
        raise EvaluateError(f"--draws must be >= 1, got {draws}")
    fractions = tuple(sorted(set(fractions) | {1.0}))
    client = MlflowClient(tracking_uri)
    source = find_source(client, experiment, trial)
    configs = method_configs(source.cfg, source.augments)
    header = header_text(experiment, source)
    data = load_search_data(source, data_path)
    check_same_data(client, source, data)
    plan = refit_plan(data, source.trial, source.cfg)
    power = test_power(data, source.cfg.data.positive_class, baseline_cv_auc(client, source))
    if dry_run:
        flat = {
            m: {k: v for k, v in c.to_flat().items() if k.split(".")[0] in ("synth", "augment")}
            for m, c in configs.items()
        }
        return f"{header}\nrefit: {plan.reason}\n{power.text}\n" + json.dumps(flat, indent=2), None
    threads = set_threads(cpus)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    progress(header)
    progress(power.text)
    progress(f"refit: {plan.reason}; scored on {len(data.test)} {split} images; {len(configs)} methods x {seeds} seeds"
             + (f" x {draws} draws" if draws > 1 else "")
             + (f" x train fractions {', '.join(f'{f:g}' for f in fractions)}" if len(fractions) > 1 else "")
             + f"; {threads} torch thread(s)")
    seed_list = list(range(seeds))
    cache = GeneratorCache(gan_cache) if gan_cache else None
    refits = evaluate_methods(configs, data, plan, seed_list, device, fractions, progress, cache, draws)
    positive = source.cfg.data.positive_class
    labels = [u.label for u in refits.units] if draws > 1 else seed_list
    ev = compare(refits.by_fraction[1.0], refits.labels, labels, positive,
                 ranking_metric_of(source.resolved["search"]["metric"]))
    metrics = ev.metrics()
    table = format_table(ev, split, metrics)
    per_fraction = [
        study.compare_fraction(f, refits.sizes[f], by_method, list(BASELINES), refits.labels, draws,
                               lambda y, p: ensemble_auc(y, p, positive))
        for f, by_method in refits.by_fraction.items()
    ]
    table += "\n\n" + study_table(per_fraction, power, draws, seeds)
    run_id = log_evaluation(client, source, ev, metrics, split, table, plan, configs, refits, per_fraction, power,
                            seed_list)
    return (
        f"\n{table}\n\nLogged as evaluation run {run_id} (tag gantune.role=evaluation) "
        f"under search run {source.search.info.run_id}",
        run_id,
    )


def set_threads(cpus: int | None) -> int:
    """torch's intra-op threads for the refits: --cpus, else the CPUs this process may use. The
    Ray trainable sets the same from cpus_per_trial; without it torch starts one thread per core
    whatever else runs there (benchmarks/refit_threads.py: one refit 90.5 s with 2 threads, 19.8 s
    with 1, on this 2-core machine under load)."""
    import os

    threads = cpus or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    return threads


def study_table(per_fraction: list[study.FractionResult], power: Power, draws: int, seeds: int) -> str:
    """Per train fraction: test AUC per method, best_config minus that fraction's strongest
    baseline with its hierarchical interval, and the verdict against mde_auc."""
    rows = study.study_rows(per_fraction, power.mde)
    methods = [k for k in rows[0] if k.startswith("auc_")]
    head = (f"data efficiency: {draws} draw(s) x {seeds} seed(s) per train fraction; delta = best_config - the "
            f"strongest baseline at that fraction, {CONFIDENCE:.0%} hierarchical bootstrap interval (draws, seeds, "
            f"test images); mde_auc {power.mde:.3f}:")
    return head + "\n" + text_table(rows, ["fraction", "train_images", *methods, "baseline", "delta_auc", "interval",
                                           "verdict"])


def evaluate_main(args) -> int:
    from .gan_cache import cache_location

    from gantune import api

    result = api.evaluate(args.experiment, tracking_uri=args.tracking_uri, split=args.split, seeds=args.seeds,
                          data=args.data, dry_run=args.dry_run, train_fraction=args.train_fraction,
                          gan_cache=cache_location(args.storage_path, args.gan_cache, args.no_gan_cache),
                          trial=args.trial, draws=args.draws, cpus=args.cpus, progress=write_line)
    print(result.text)
    return 0
