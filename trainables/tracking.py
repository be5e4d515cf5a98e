"""The worker side's one MLflow home: a trial's child run under the search's parent run.

Restore-safe: a trial that Ray restarts or resumes reopens the run tagged with its trial id
instead of creating a second one."""

from __future__ import annotations

import os
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass

import mlflow
import numpy as np
import torch
from mlflow.entities import Metric, Param
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema
from mlflow.tracking import MlflowClient

from . import outcome
from .config import TrialConfig
from .gans import DivergedError, generator_checkpoint
from .metrics import fold_metric_key
from .paths import inside
from .plots import save_confusion_matrix, save_egan_plot, save_grid, save_roc

GRID_PER_CLASS = 16
PIP_REQUIREMENTS = ["torch", "numpy", "pandas", "gantune"]
GENERATOR_SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec("long", "label"), ColSpec("long", "num"), ColSpec("long", "seed", required=False)])
)
"""What GeneratorModel.predict takes (its output, one uint8 array per row, has no MLflow schema)."""


RUN_ID_KEY = "trial_run_id"
"""The result key every report of a trial carries its MLflow run id under, so the driver closes
the run by id (search/callbacks.py) instead of searching for it by tags."""


def find_trial_run(client: MlflowClient, experiment_id: str, parent_run_id: str, trial_id: str):
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`gantune.trial_id` = '{trial_id}' and tags.`mlflow.parentRunId` = '{parent_run_id}'",
        max_results=1,
    )
    return runs[0] if runs else None


def fold_points(result, means: dict[str, float], step: int) -> list[tuple[str, float, int]]:
    """Every metric point of one fold as (key, value, step): the running means and diagnostics at
    step = folds done, each fold metric at step = fold index (search/runs.add_fold_values reads
    them back); `folds_done` last, so its point means the whole fold reached the store."""
    synthetic = result.synthetic
    per_fold = {fold_metric_key(f"val_{k}"): v for k, v in result.metrics.items()}
    per_fold.update({fold_metric_key(k): v for k, v in result.gen_metrics.items()})
    diagnostics = dict(synthetic.history)
    diagnostics.update({f"synth_kept_fraction_c{c}": f for c, f in synthetic.kept_fraction.items()})
    return [
        *((k, v, step) for k, v in {**means, **diagnostics}.items()),
        *((k, v, result.fold) for k, v in per_fold.items()),
        ("folds_done", step, step),
    ]


@dataclass
class TrialRun:
    client: MlflowClient
    run_id: str
    cfg: TrialConfig
    class_names: tuple[str, ...]
    keep_every_generator: bool = False
    """--keep-artifacts all: log the generator at every fold (else once, at the trial's last fold)."""
    logged_folds: frozenset[int] = frozenset()
    """Folds (`folds_done` steps) a reopened run already has: a fold run again after a restore
    (its checkpoint lost with the driver) logs its artifacts again, but not a second metric point."""

    @classmethod
    def open(cls, settings, trial_id: str, params: dict, cfg: TrialConfig) -> TrialRun:
        client = MlflowClient(settings.tracking_uri)
        existing = find_trial_run(client, settings.experiment_id, settings.parent_run_id, trial_id)
        logged: frozenset[int] = frozenset()
        if existing is not None:
            run_id = existing.info.run_id
            logged = frozenset(m.step for m in client.get_metric_history(run_id, "folds_done"))
            client.update_run(run_id, status="RUNNING")
            if "gantune.failure_reason" in existing.data.tags:  # from an attempt Tune is now retrying
                client.delete_tag(run_id, "gantune.failure_reason")
        else:
            tags = {
                "mlflow.parentRunId": settings.parent_run_id,
                "mlflow.runName": f"trial-{trial_id}",
                "gantune.role": "trial",
                "gantune.trial_id": trial_id,
            }
            baseline = cfg.baseline_name()
            if baseline:
                tags["gantune.baseline"] = baseline
            run_id = client.create_run(settings.experiment_id, tags=tags).info.run_id
            client.log_batch(run_id, params=[Param(k, str(v)) for k, v in sorted(params.items())])
            client.log_dict(run_id, cfg.to_flat(), "config/trial_config.json")
        return cls(client, run_id, cfg, settings.data.pool.class_names, settings.keep_artifacts == "all", logged)

    # --- per fold ---------------------------------------------------------------------------
    def log_fold(self, result, results: list, means: dict[str, float]) -> None:
        step = len(results)
        synthetic = result.synthetic
        if step not in self.logged_folds:
            self.log_metrics(fold_points(result, means, step))
        with tempfile.TemporaryDirectory() as tmp:
            self._log_plots(results, tmp)
            if synthetic.gans:
                self._log_samples(synthetic, tmp)
                # Once per trial, at its last fold: the heaviest artifact (every class's G and D) is
                # not re-uploaded per fold, and a trial the scheduler stops early keeps none.
                if self.keep_every_generator or step == self.cfg.data.total_folds:
                    self._log_generator(synthetic, tmp)

    def log_metrics(self, points: list[tuple[str, float, int]]) -> None:
        """(key, value, step) points in one request, stamped once: a request MLflow's client
        retries (a server that went away) carries the same timestamps, and the store drops
        points it already holds, so a retry never duplicates a point."""
        now = int(1000 * time.time())
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v, step in points])

    def _log_plots(self, results: list, tmp: str) -> None:
        labels = np.concatenate([r.val_labels for r in results])
        proba = np.concatenate([r.val_proba for r in results])
        plots = os.path.join(tmp, "plots")
        os.makedirs(plots)
        save_confusion_matrix(labels, proba, self.class_names, os.path.join(plots, "confusion_matrix.png"))
        save_roc(labels, proba, self.class_names, os.path.join(plots, "roc.png"), self.cfg.data.positive_class)
        self.client.log_artifacts(self.run_id, plots, "plots")

    def _log_samples(self, synthetic, tmp: str) -> None:
        samples = os.path.join(tmp, "samples")
        os.makedirs(samples)
        for label, gan in synthetic.gans.items():
            # The same latent seed in every trial and fold, so grids compare across runs.
            images = gan.sample(GRID_PER_CLASS, seed=self.cfg.synth.sample_seed)
            name = f"class_{label}_{self.class_names[label]}"
            save_grid(images, inside(samples, f"{name}.png"))
            if label in synthetic.refiners:
                # Row pairs: unrefined above, refined below, same latents.
                refined = synthetic.refiners[label].refine(images)
                pairs = torch.stack([images[:8], refined[:8]]).flatten(0, 1)
                save_grid(pairs, inside(samples, f"{name}_unrefined_vs_refined.png"), columns=8)
        self.client.log_artifacts(self.run_id, samples, "samples")
        evolution = {k: v for gan in synthetic.gans.values() for k, v in gan.history.items() if k.startswith("egan_")}
        if evolution:
            path = os.path.join(tmp, "egan_selection.png")
            save_egan_plot(synthetic.gans, self.class_names, path)
            self.client.log_artifact(self.run_id, path, "plots")

    def _log_generator(self, synthetic, tmp: str) -> None:
        """The fold's per-class generators (and refiners) as a pyfunc model at `generator/`."""
        checkpoint = os.path.join(tmp, "generator.pt")
        state = generator_checkpoint(
            synthetic.gans, self.class_names, synthetic.refiners, self.cfg.synth.filter_threshold
        )
        torch.save(state, checkpoint)
        model_dir = os.path.join(tmp, "generator")
        with warnings.catch_warnings():
            # An input example would make MLflow load and run the model once per fold just to log it.
            warnings.filterwarnings("ignore", message=".*input example was not provided")
            self._save_generator_model(model_dir, checkpoint)
        self.client.log_artifacts(self.run_id, model_dir, "generator")

    @staticmethod
    def _save_generator_model(model_dir: str, checkpoint: str) -> None:
        mlflow.pyfunc.save_model(
            model_dir,
            python_model=os.path.join(os.path.dirname(__file__), "generator_model.py"),
            artifacts={"checkpoint": checkpoint},
            pip_requirements=PIP_REQUIREMENTS,
            signature=GENERATOR_SIGNATURE,
        )

    # --- end --------------------------------------------------------------------------------
    def finish(self) -> None:
        end_run(self.client, self.run_id, outcome.FINISHED)

    def fail(self, exc: BaseException, ended: str = outcome.FAILED) -> None:
        """End the run FAILED with the reason; `ended` is the outcome (diverged, out of memory, failed)."""
        kind = "diverged" if isinstance(exc, DivergedError) else type(exc).__name__
        reason = f"{kind}: {exc}"[:5000]
        self.client.set_tag(self.run_id, "gantune.failure_reason", reason)
        try:
            self.client.log_text(self.run_id, traceback.format_exc(), "failure.txt")
        except Exception:  # noqa: BLE001 - the artifact store may be what failed; the tag keeps the reason
            pass
        end_run(self.client, self.run_id, ended)


def end_run(client: MlflowClient, run_id: str, ended: str) -> None:
    """End a trial run with an outcome (trainables/outcome.py): its tag, then its MLflow status."""
    client.set_tag(run_id, outcome.OUTCOME_TAG, ended)
    client.set_terminated(run_id, status=outcome.MLFLOW_STATUS[ended])
