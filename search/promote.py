"""`gantune promote`: register the best trial's generator of an experiment's latest search, if the
evidence says it helps.

The candidate (`candidate`, the one definition `gantune evaluate` refits by default too) is the
best complete trial (finished every fold, `leaderboard.run_complete`) that logged a `generator`
model, ranked by the metric's mean over folds or (`--rank-by paired_lcb`, or the space's
`search.rank_by`) by the lower confidence bound of its paired per-fold difference to the real_only
trial. The gate decides on the strongest evidence about THAT trial, and refuses it, printing the
number each check decided on, when
- the search ran with --smoke-test (tag gantune.smoke_test=true: budgets shrunk to minutes), or
- the search has no complete real_only baseline trial (tag gantune.baseline=real_only), or
- its worst fold is below the baseline's worst fold (a mean can hide one collapsed fold), or
- the lower bound of the strongest evidence is not above 0. With a `gantune evaluate` run of this
  trial (tag gantune.role=evaluation under the search run, param source_trial_id = its trial id;
  an evaluation of another trial says nothing about this one) that is the test split's interval
  against the strongest baseline (EVIDENCE, first metric present: the hierarchical interval, the
  paired bootstrap, the seed-level t interval; an evaluation with none of them is a refusal), else
  the one-sided 95 % Nadeau-Bengio bound of the paired per-fold difference to the real_only trial.
`--force` registers it anyway and tags the version gantune.forced=true with the refused checks.
The model version is registered from `runs:/<trial run>/generator` (a pyfunc logged as code plus
a weights-only checkpoint, so loading it never unpickles objects) and tagged with its lineage and
the gate's numbers, and the alias (default `champion`) moves to it."""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass

from .leaderboard import RANK_BY, fixed_folds, paired_to_baseline, rank_complete_runs
from .runs import (
    add_fold_values,
    evaluation_runs,
    RunsError,
    experiment_and_latest_search,
    resolved_space,
    trial_id_of,
    trial_runs,
)
from .tracking import SMOKE_TAG

MAX_TAG_CHARS = 5000  # MLflow's limit on a model version tag value
DEFAULT_METRIC = "val_auc"
"""--metric's default: what `gantune promote` ranks by, so what `gantune evaluate` refits by default."""


class PromoteError(ValueError):
    """No promotable trial, or a trial the gate refuses; the message gives the numbers."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--experiment", required=True, help="MLflow experiment whose latest search to promote from")
    p.add_argument("--metric", default=DEFAULT_METRIC,
                   help=f"trial metric that ranks trials (default: {DEFAULT_METRIC})")
    p.add_argument("--mode", choices=("max", "min"), help="direction of --metric (default: the search's mode)")
    p.add_argument("--rank-by", choices=RANK_BY,
                   help="rank complete trials by the metric's mean over folds, or by the lower confidence bound of the "
                        "paired per-fold difference to real_only (default: the space's search.rank_by, else mean)")
    p.add_argument("--model-name", help="registered model name (default: <experiment>-generator)")
    p.add_argument("--alias", default="champion", help="alias moved to the new version (default: champion)")
    p.add_argument("--force", action="store_true",
                   help="register even if the gate refuses (recorded as the tag gantune.forced=true on the version)")


@dataclass(frozen=True)
class Check:
    """One condition of the gate."""

    name: str
    passed: bool
    detail: str
    """The numbers, in a sentence."""
    decides: bool = True
    """False for context printed beside the checks (e.g. the cross-validation bound when a test
    evaluation decides instead); it neither passes nor refuses."""

    @property
    def mark(self) -> str:
        return "info" if not self.decides else "ok" if self.passed else "REFUSED"


@dataclass(frozen=True)
class Choice:
    """What promotion decided, before anything is registered."""

    search: object
    """The parent (search) run."""
    best: object
    """The trial run to promote."""
    baseline: object | None
    """The complete real-only baseline trial run, if the search has one."""
    metric: str
    mode: str
    rank_by: str
    paired: object | None
    """search.stats.FoldDelta of best against baseline (positive = better), None without both."""
    checks: tuple[Check, ...]

    @property
    def value(self) -> float:
        return self.best.data.metrics[self.metric]

    @property
    def baseline_value(self) -> float | None:
        return self.baseline.data.metrics[self.metric] if self.baseline else None

    @property
    def baseline_text(self) -> str:
        return "none" if self.baseline_value is None else f"{self.baseline_value:.4g}"

    @property
    def allowed(self) -> bool:
        return all(c.passed for c in self.checks if c.decides)

    def explain(self) -> str:
        """Why the gate allowed or refused the promotion, one line per check."""
        verdict = "passes every check" if self.allowed else "is refused"
        head = (f"trial {trial_id_of(self.best)} (run {self.best.info.run_id}, {self.metric}={self.value:.4g}, "
                f"ranked by {self.rank_by}) {verdict}:")
        lines = [head]
        lines += [f"  [{c.mark}] {c.name}: {c.detail}" for c in self.checks]
        return "\n".join(lines)


def search_settings(client, search_run) -> dict:
    """The search's `search` settings as it resolved them ({} for a search without the file)."""
    try:
        return resolved_space(client, search_run.info.run_id).get("search", {})
    except RunsError:
        return {}


def search_folds(client, search_run) -> tuple[int, int]:
    """(folds per trial = data.folds x data.repeats, k = data.folds) of the search (the data
    section is fixed per search); the defaults for a search that logged no resolved space."""
    try:
        fixed = resolved_space(client, search_run.info.run_id).get("fixed", {})
    except RunsError:
        fixed = {}
    return fixed_folds(fixed)


def has_generator(client, run_id: str) -> bool:
    return any(a.path == "generator/MLmodel" for a in client.list_artifacts(run_id, "generator"))


@dataclass(frozen=True)
class Evidence:
    """One test-split interval an evaluation run logs for best_config against the strongest baseline."""

    low: str
    """The metric holding the interval's lower bound: the gate decides on it (> 0)."""
    mean: str
    high: str
    what: str
    """What the interval is, for the printed check."""


EVIDENCE = (
    Evidence("frac_1_delta_auc_lo", "frac_1_delta_auc", "frac_1_delta_auc_hi",
             "hierarchical paired bootstrap at the full training set"),
    Evidence("paired_delta_auc_bootstrap_ci_low", "ensemble_delta_auc", "paired_delta_auc_bootstrap_ci_high",
             "paired bootstrap over test images of the seed ensembles"),
    Evidence("paired_delta_auc_ci_low", "paired_delta_auc", "paired_delta_auc_ci_high",
             "t interval over the paired seeds"),
)
"""Strongest first: the first of these an evaluation run logged is what the gate reads from it."""


def evidence_of(run) -> Evidence | None:
    """The strongest interval the evaluation run logged (a finite lower bound), None if none."""
    metrics = run.data.metrics
    return next((e for e in EVIDENCE if math.isfinite(metrics.get(e.low, math.nan))), None)


def evaluations_of(evaluations: list, trial) -> list:
    """The finished evaluation runs that refitted this trial (param source_trial_id): the only
    test-split evidence about it. An evaluation of another trial says nothing about this one."""
    trial_id = trial_id_of(trial)
    return [e for e in evaluations
            if e.data.params.get("source_trial_id") == trial_id and e.info.status == "FINISHED"]


def evaluation_check(mine: list) -> Check:
    """The test-split check from this trial's evaluations (newest first): the strongest evidence
    decides (EVIDENCE order, then the newest); one evaluation without any is a refusal."""
    names = ", ".join(e.low for e in EVIDENCE)
    missing = [e for e in mine if evidence_of(e) is None]
    if missing:
        return Check("test evaluation", False,
                     f"evaluation run {missing[0].info.run_id} of this trial logged none of {names}: no test-split "
                     f"lower bound to decide on (rerun `gantune evaluate`)")
    run = min(mine, key=lambda e: EVIDENCE.index(evidence_of(e)))  # stable: the newest of the strongest
    ev, m = evidence_of(run), run.data.metrics
    low, mean, high = m[ev.low], m.get(ev.mean, math.nan), m.get(ev.high, math.nan)
    earlier = [f"run {e.info.run_id} {evidence_of(e).low} {e.data.metrics[evidence_of(e).low]:+.4f}"
               for e in mine if e is not run]
    return Check("test evaluation", low > 0,
                 f"lower bound {low:+.4f} ({ev.low}) of best_config - {run.data.params.get('better_baseline', '?')} "
                 f"test AUC {mean:+.4f} [{low:+.4f}, {high:+.4f}], {ev.what}, evaluation run {run.info.run_id} of "
                 f"this trial; must be > 0" + (f" (other evaluations of it: {'; '.join(earlier)})" if earlier else ""))


def cv_check(paired, base: str, decides: bool) -> Check:
    """The Nadeau-Bengio one-sided 95 % lower bound of the paired per-fold difference: it decides
    when no evaluation of the trial exists."""
    lcb = paired.lcb
    shown = f"{lcb:+.4f}" if math.isfinite(lcb) else "n/a (one fold)"
    why = "must be > 0" if decides else "not deciding: the test evaluation of this trial is the stronger evidence"
    return Check("paired folds", math.isfinite(lcb) and lcb > 0,
                 f"one-sided 95% lower bound {shown} (Nadeau-Bengio corrected) of the paired per-fold difference "
                 f"to {base}, mean {paired.mean:+.4f} over {paired.folds} folds; {why}", decides)


def evidence_checks(best, paired, evaluations: list, base: str) -> tuple[list[Check], list[Check]]:
    """(the decisive check on the strongest evidence about `best`, the other evidence as context)."""
    mine = evaluations_of(evaluations, best)
    cv = [] if paired is None else [cv_check(paired, base, decides=not mine)]
    if mine:
        return [evaluation_check(mine)], cv
    others = sorted({e.data.params.get("source_trial_id", "?") for e in evaluations} - {trial_id_of(best)})
    elsewhere = (f"; the search's evaluations of other trials ({', '.join(others)}) are not evidence for this one"
                 if others else "")
    return cv, [Check("test evaluation", True, f"no `gantune evaluate` run of this trial, so the cross-validation "
                                               f"bound decides{elsewhere}", decides=False)]


def smoke_check(search) -> list[Check]:
    if search.data.tags.get(SMOKE_TAG) != "true":
        return []
    return [Check("smoke test", False, f"search {search.info.run_id} ran with --smoke-test (tag {SMOKE_TAG}=true): "
                                       "every budget was shrunk to minutes, so its numbers decide nothing")]


def gate(search, best, baseline, paired, evaluations: list, metric: str, mode: str,
         total_folds: int) -> tuple[Check, ...]:
    """The checks (see the module docstring), each with the number it decided on."""
    checks = smoke_check(search)
    if baseline is None:
        return (*checks, Check("baseline", False, f"the search has no real_only trial that finished all "
                                                  f"{total_folds} folds with '{metric}': nothing to compare with"))
    base = f"real_only trial {trial_id_of(baseline)}"
    if paired is None:
        checks.append(Check("paired folds", False, f"per-fold values fold<i>_{metric} of all {total_folds} folds are "
                                                   f"missing on the trial or on {base}"))
    decisive, context = evidence_checks(best, paired, evaluations, base)
    checks += decisive
    if paired is not None:
        sign = 1 if mode == "max" else -1  # paired is oriented higher-is-better; show the metric's own values
        checks.append(Check("worst fold", paired.worst_a >= paired.worst_b,
                            f"worst fold {sign * paired.worst_a:.4f} vs the baseline's {sign * paired.worst_b:.4f}; "
                            f"must not be worse"))
    return (*checks, *context)


@dataclass(frozen=True)
class Candidate:
    """The trial `gantune promote` would register (if the gate lets it) and `gantune evaluate`
    refits by default: one definition, so both judge the same trial."""

    search: object
    """The parent (search) run."""
    best: object | None
    """The best complete trial run with a logged generator; None when no trial qualifies."""
    top: object | None
    """The best complete trial run of any kind (often a baseline); None when none is complete."""
    baseline: object | None
    """The best complete real_only baseline trial run, if the search has one."""
    complete: int
    """How many trials finished every fold."""
    metric: str
    mode: str
    rank_by: str
    total_folds: int
    folds: int
    """k of k-fold (data.folds)."""

    def why(self) -> str:
        """One line: why `best` is the trial (or why there is none)."""
        ranking = f"ranked by {self.metric} ({'mean over folds' if self.rank_by == 'mean' else self.rank_by})"
        if self.best is None:
            return (f"no trial with a logged generator finished all {self.total_folds} folds ({self.complete} "
                    f"trial(s) did, none with a generator), so `gantune promote` would register none")
        text = (f"the trial `gantune promote` would register: the best of the {self.complete} trials that finished "
                f"all {self.total_folds} folds that has a generator, {ranking}")
        if self.top is not None and self.top is not self.best:
            kind = self.top.data.tags.get("gantune.baseline") or "a trial without a generator"
            text += f"; the search's best, trial {trial_id_of(self.top)}, is {kind} (`--trial best` refits it)"
        return text


def candidate(client, experiment_id: str, search, metric: str = DEFAULT_METRIC, mode: str | None = None,
              rank_by: str | None = None) -> Candidate:
    """The trial promote would register, with what it is ranked against (mode and rank_by default
    to the search's settings, as `gantune promote` without flags)."""
    settings = search_settings(client, search)
    mode = mode or (settings.get("mode", "max") if settings.get("metric") == metric else "max")
    rank_by = rank_by or settings.get("rank_by", "mean")
    total_folds, folds = search_folds(client, search)
    trials = add_fold_values(client, trial_runs(client, experiment_id, search.info.run_id), metric)
    # The baseline: the best real_only trial that ran every fold.
    baselines = rank_complete_runs([r for r in trials if r.data.tags.get("gantune.baseline") == "real_only"],
                                   metric, mode, total_folds, folds)
    baseline = baselines[0] if baselines else None
    # Only trials that ran every fold: a trial the scheduler stopped early has a noisier mean.
    ranked = rank_complete_runs(trials, metric, mode, total_folds, folds, rank_by, baseline)
    best = next((r for r in ranked if has_generator(client, r.info.run_id)), None)
    return Candidate(search, best, ranked[0] if ranked else None, baseline, len(ranked), metric, mode, rank_by,
                     total_folds, folds)


def choose(client, experiment_name: str, metric: str, mode: str | None, rank_by: str | None = None) -> Choice:
    experiment, search = experiment_and_latest_search(client, experiment_name, PromoteError)
    c = candidate(client, experiment.experiment_id, search, metric, mode, rank_by)
    if c.best is None:
        raise PromoteError(
            f"search {search.info.run_id} of '{experiment_name}' has no trial that finished all {c.total_folds} folds "
            f"with '{metric}' and a logged generator"
        )
    paired = (paired_to_baseline(c.best.data.metrics, c.baseline.data.metrics, metric, c.mode, c.total_folds, c.folds)
              if c.baseline is not None else None)
    evaluations = evaluation_runs(client, experiment.experiment_id, search.info.run_id)
    checks = gate(search, c.best, c.baseline, paired, evaluations, metric, c.mode, c.total_folds)
    return Choice(search, c.best, c.baseline, metric, c.mode, c.rank_by, paired, checks)


def lineage_tags(choice: Choice) -> dict[str, str]:
    best = choice.best
    tags = {
        "gantune.trial_run_id": best.info.run_id,
        "gantune.trial_id": best.data.tags.get("gantune.trial_id", ""),
        "gantune.parent_run_id": choice.search.info.run_id,
        "gantune.experiment_id": best.info.experiment_id,
        "gantune.metric": choice.metric,
        "gantune.mode": choice.mode,
        "gantune.rank_by": choice.rank_by,
        "gantune.metrics": json.dumps({k: v for k, v in sorted(best.data.metrics.items()) if k.startswith("val_")}),
        "gantune.config": json.dumps(dict(sorted(best.data.params.items()))),
        "gantune.config_uri": f"runs:/{best.info.run_id}/config/trial_config.json",
        "gantune.beats_baseline": str(choice.allowed).lower(),
        "gantune.gate": json.dumps([{"check": c.name, "passed": c.passed, "decides": c.decides, "detail": c.detail}
                                    for c in choice.checks]),
    }
    if choice.baseline is not None:
        tags["gantune.baseline_run_id"] = choice.baseline.info.run_id
        tags[f"gantune.baseline_{choice.metric}"] = repr(choice.baseline_value)
        tags[f"gantune.delta_{choice.metric}_vs_real_only"] = repr(choice.value - choice.baseline_value)
    if choice.paired is not None:
        tags[f"gantune.paired_delta_{choice.metric}_vs_real_only"] = repr(choice.paired.mean)
        tags[f"gantune.paired_lcb_{choice.metric}_vs_real_only"] = repr(choice.paired.lcb)
    return {k: v[:MAX_TAG_CHARS] for k, v in tags.items()}


def register(client, choice: Choice, model_name: str, alias: str, forced: bool):
    """Create the registered model if needed, add a version from the trial's generator (or reuse
    the version already made from that trial, so promoting twice adds nothing), tag its lineage
    and move the alias."""
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(model_name)
    except MlflowException:
        client.create_registered_model(model_name, description="gantune generators promoted from searches")
    run_id = choice.best.info.run_id
    earlier = client.search_model_versions(f"name = '{model_name}' and run_id = '{run_id}'")
    if earlier:
        version = max(earlier, key=lambda v: int(v.version))
        if forced and not choice.allowed:  # a forced re-promotion of an existing version is recorded too
            client.set_model_version_tag(model_name, version.version, "gantune.forced", "true")
        client.set_registered_model_alias(model_name, alias, version.version)
        return version
    tags = {**lineage_tags(choice), "gantune.forced": str(forced and not choice.allowed).lower()}
    version = client.create_model_version(
        model_name, source=f"runs:/{run_id}/generator", run_id=run_id, tags=tags,
        description=f"{choice.metric}={choice.value:.4g} (real-only baseline: {choice.baseline_text})",
    )
    client.set_registered_model_alias(model_name, alias, version.version)
    return version


def promote(tracking_uri: str, experiment: str, metric: str = "val_auc", mode: str | None = None,
            model_name: str | None = None, alias: str = "champion", force: bool = False, rank_by: str | None = None):
    """Pick, gate and register; returns (Choice, ModelVersion). Raises PromoteError on refusal."""
    choice, version, refused = choose_and_register(tracking_uri, experiment, metric, mode, model_name, alias, force,
                                                   rank_by)
    if version is None:
        raise PromoteError(refused)
    return choice, version


def choose_and_register(tracking_uri: str, experiment: str, metric: str = "val_auc", mode: str | None = None,
                        model_name: str | None = None, alias: str = "champion", force: bool = False,
                        rank_by: str | None = None):
    """(Choice, the registered ModelVersion or None, why nothing was registered or None)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    choice = choose(client, experiment, metric, mode, rank_by)
    model_name = model_name or f"{experiment}-generator"
    if not choice.allowed and not force:
        return choice, None, refusal(choice, alias_holder(client, model_name, alias))
    return choice, register(client, choice, model_name, alias, force), None


def alias_holder(client, model_name: str, alias: str) -> str:
    """What the alias points to now: a refusal leaves it there, and the user must know what a
    `generate` from models:/NAME@ALIAS would still use."""
    from mlflow.exceptions import MlflowException

    try:
        version = client.get_model_version_by_alias(model_name, alias)
    except MlflowException:
        return f"no version of {model_name} holds @{alias}"
    forced = " (forced past the gate)" if version.tags.get("gantune.forced") == "true" else ""
    return f"@{alias} stays on {model_name} version {version.version}{forced}, trial run {version.run_id}"


def refusal(choice: Choice, holder: str) -> str:
    return (f"{choice.explain()}\nin search {choice.search.info.run_id}; nothing registered, {holder} "
            f"(--force registers it anyway, tagged gantune.forced=true)")


def promote_main(args) -> int:
    from gantune import api

    result = api.promote(args.experiment, tracking_uri=args.tracking_uri, metric=args.metric, mode=args.mode,
                         model_name=args.model_name, alias=args.alias, force=args.force, rank_by=args.rank_by)
    if not result.promoted:
        raise PromoteError(result.refusal)
    why = "FORCED past the gate (--force; tagged gantune.forced=true)" if result.forced else (
        "promoted because it passes the gate")
    print(
        f"{result.why}\n{why}.\n"
        f"{result.model_name} version {result.version} is @{result.alias}: trial run {result.trial_run_id} "
        f"({result.metric}={result.value:.4g}, real-only baseline {result.baseline}) "
        f"of search {result.search_run_id}\n  load it with: {result.model_uri}"
    )
    return 0
