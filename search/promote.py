"""`gantune promote`: register the best trial's generator of an experiment's latest search.

The candidate is the best finished trial run that logged a `generator` model; it must beat the
search's real-only baseline trial (tag gantune.baseline=real_only), else promotion is refused
unless --force. The model version is registered from `runs:/<trial run>/generator` (a pyfunc
logged as code plus a weights-only checkpoint, so loading it never unpickles objects) and tagged
with its lineage, and the alias (default `champion`) moves to it."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass

from .leaderboard import rank_runs
from .runs import RunsError, experiment_and_latest_search, resolved_space, trial_runs

MAX_TAG_CHARS = 5000  # MLflow's limit on a model version tag value


class PromoteError(ValueError):
    """No promotable trial, or a trial that does not beat the baseline; the message says which."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--experiment", required=True, help="MLflow experiment whose latest search to promote from")
    p.add_argument("--metric", default="val_auc", help="trial metric that ranks trials (default: val_auc)")
    p.add_argument("--mode", choices=("max", "min"), help="direction of --metric (default: the search's mode)")
    p.add_argument("--model-name", help="registered model name (default: <experiment>-generator)")
    p.add_argument("--alias", default="champion", help="alias moved to the new version (default: champion)")
    p.add_argument("--force", action="store_true", help="register even if the best trial does not beat the real-only baseline")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///./mlflow.db)")


@dataclass(frozen=True)
class Choice:
    """What promotion decided, before anything is registered."""

    search: object
    """The parent (search) run."""
    best: object
    """The trial run to promote."""
    baseline: object | None
    """The real-only baseline trial run, if the search has one with the metric."""
    metric: str
    mode: str

    @property
    def value(self) -> float:
        return self.best.data.metrics[self.metric]

    @property
    def baseline_value(self) -> float | None:
        return self.baseline.data.metrics[self.metric] if self.baseline else None

    @property
    def baseline_text(self) -> str:
        return "none" if self.baseline_value is None else f"{self.baseline_value:.4g}"

    def beats_baseline(self) -> bool:
        base = self.baseline_value
        if base is None:
            return False
        return self.value > base if self.mode == "max" else self.value < base


def search_mode(client, search_run, metric: str) -> str:
    """The search's own direction when ranking by its metric; 'max' for other metrics."""
    try:
        settings = resolved_space(client, search_run.info.run_id).get("search", {})
    except RunsError:  # a search without the file: the default direction
        return "max"
    return settings.get("mode", "max") if settings.get("metric") == metric else "max"


def has_generator(client, run_id: str) -> bool:
    return any(a.path == "generator/MLmodel" for a in client.list_artifacts(run_id, "generator"))


def choose(client, experiment_name: str, metric: str, mode: str | None) -> Choice:
    experiment, search = experiment_and_latest_search(client, experiment_name, PromoteError)
    mode = mode or search_mode(client, search, metric)
    trials = trial_runs(client, experiment.experiment_id, search.info.run_id)
    # Only trials that ran every fold: a trial the scheduler stopped early has a noisier mean.
    finished = rank_runs([r for r in trials if r.info.status == "FINISHED"], metric, mode)
    best = next((r for r in finished if has_generator(client, r.info.run_id)), None)
    if best is None:
        raise PromoteError(
            f"search {search.info.run_id} of '{experiment_name}' has no finished trial with '{metric}' and a logged generator"
        )
    baselines = rank_runs(
        [r for r in trials if r.data.tags.get("gantune.baseline") == "real_only" and r.info.status != "FAILED"], metric, mode
    )
    return Choice(search, best, baselines[0] if baselines else None, metric, mode)


def lineage_tags(choice: Choice) -> dict[str, str]:
    best = choice.best
    tags = {
        "gantune.trial_run_id": best.info.run_id,
        "gantune.trial_id": best.data.tags.get("gantune.trial_id", ""),
        "gantune.parent_run_id": choice.search.info.run_id,
        "gantune.experiment_id": best.info.experiment_id,
        "gantune.metric": choice.metric,
        "gantune.mode": choice.mode,
        "gantune.metrics": json.dumps({k: v for k, v in sorted(best.data.metrics.items()) if k.startswith("val_")}),
        "gantune.config": json.dumps(dict(sorted(best.data.params.items()))),
        "gantune.config_uri": f"runs:/{best.info.run_id}/config/trial_config.json",
        "gantune.beats_baseline": str(choice.beats_baseline()).lower(),
    }
    if choice.baseline is not None:
        tags["gantune.baseline_run_id"] = choice.baseline.info.run_id
        tags[f"gantune.baseline_{choice.metric}"] = repr(choice.baseline_value)
        tags[f"gantune.delta_{choice.metric}_vs_real_only"] = repr(choice.value - choice.baseline_value)
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
        client.set_registered_model_alias(model_name, alias, version.version)
        return version
    tags = {**lineage_tags(choice), "gantune.forced": str(forced and not choice.beats_baseline()).lower()}
    version = client.create_model_version(
        model_name, source=f"runs:/{run_id}/generator", run_id=run_id, tags=tags,
        description=f"{choice.metric}={choice.value:.4g} (real-only baseline: {choice.baseline_text})",
    )
    client.set_registered_model_alias(model_name, alias, version.version)
    return version


def promote(tracking_uri: str, experiment: str, metric: str = "val_auc", mode: str | None = None,
            model_name: str | None = None, alias: str = "champion", force: bool = False):
    """Pick, check and register; returns (Choice, ModelVersion). Raises PromoteError on refusal."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    choice = choose(client, experiment, metric, mode)
    if not choice.beats_baseline() and not force:
        base = "no real-only baseline trial" if choice.baseline is None else f"the real-only baseline's {choice.baseline_text}"
        raise PromoteError(
            f"best trial {choice.best.info.run_id} ({metric}={choice.value:.4g}) does not beat {base} "
            f"in search {choice.search.info.run_id}; nothing registered (--force registers it anyway)"
        )
    version = register(client, choice, model_name or f"{experiment}-generator", alias, force)
    return choice, version


def promote_main(args) -> int:
    choice, version = promote(
        args.tracking_uri, args.experiment, args.metric, args.mode, args.model_name, args.alias, args.force
    )
    print(
        f"{version.name} version {version.version} is @{args.alias}: trial run {choice.best.info.run_id} "
        f"({choice.metric}={choice.value:.4g}, real-only baseline {choice.baseline_text}) "
        f"of search {choice.search.info.run_id}\n  load it with: models:/{version.name}@{args.alias}"
    )
    return 0
