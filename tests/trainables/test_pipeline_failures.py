"""The trainable's handling of failures no retry can fix (diverged losses, CUDA out of memory):
reported to the searcher as the worst value, not raised (Tune would retry them with the same
config), and the trial's MLflow run ends FAILED with the reason. Other errors still raise.

The Ray Tune session functions are replaced by recorders; MLflow is a real SQLite store."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import ray.tune
import torch
from mlflow.tracking import MlflowClient
from tune_context import tune_context

from gantune.trainables import pipeline
from gantune.trainables.gans import DivergedError
from gantune.trainables.pipeline import StudySettings, TrialOOMError, final_failure, trainable
from gantune.trainables.tracking import RUN_ID_KEY


@pytest.fixture
def harness(tmp_path, monkeypatch, breast_splits):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("fail", artifact_location=(tmp_path / "a").as_uri())
    parent = client.create_run(exp, tags={"gantune.role": "search"}).info.run_id
    reports = []
    monkeypatch.setattr(ray.tune, "get_context", lambda: tune_context(tmp_path / "trial", "t0001"))
    monkeypatch.setattr(ray.tune, "report", lambda metrics, **kw: reports.append(metrics))
    monkeypatch.setattr(ray.tune, "get_checkpoint", lambda: None)  # a fresh trial

    def run(error: Exception, mode: str = "max"):
        def failing_trial(*args, **kwargs):
            raise error

        monkeypatch.setattr(pipeline, "run_trial", failing_trial)
        settings = StudySettings(fixed={}, data=breast_splits, tracking_uri=uri, experiment_id=exp,
                                 parent_run_id=parent, seed=0, cpus_per_trial=1, gpus_per_trial=0,
                                 metric="val_auc", mode=mode)
        trainable({"synth.ratio": 1.0}, settings)
        run = client.search_runs([exp], "tags.`gantune.trial_id` = 't0001'")[0]
        return run, reports[-1]

    return SimpleNamespace(run=run, reports=reports, client=client)


def test_diverged_trial_reports_worst_value_and_fails_its_run(harness):
    run, report = harness.run(DivergedError("loss_g became nan at step 3; lower the learning rate"))
    # the worst value, the flag, and the trial's run id (the driver closes runs by it)
    assert report == {"val_auc": 0.0, "folds_done": 0, "diverged": 1, RUN_ID_KEY: run.info.run_id}
    assert run.info.status == "FAILED" and run.data.tags["gantune.outcome"] == "diverged"
    assert run.data.tags["gantune.failure_reason"] == "diverged: loss_g became nan at step 3; lower the learning rate"


def test_min_mode_worst_value_is_infinite(harness):
    _, report = harness.run(DivergedError("nan"), mode="min")
    assert report["val_auc"] == float("inf")


def test_cuda_oom_becomes_a_typed_failure_with_a_hint(harness):
    run, report = harness.run(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert report == {"val_auc": 0.0, "folds_done": 0, "oom": 1, RUN_ID_KEY: run.info.run_id}
    assert run.data.tags["gantune.outcome"] == "out of memory"
    reason = run.data.tags["gantune.failure_reason"]
    assert reason.startswith("TrialOOMError: CUDA out of memory: CUDA out of memory. Tried to allocate 2.00 GiB")
    assert "batch_size" in reason and "--gpus-per-trial" in reason
    assert run.info.status == "FAILED"


def test_other_errors_raise_for_tune_to_retry(harness):
    with pytest.raises(ValueError, match="flaky"):
        harness.run(ValueError("flaky disk"))
    assert harness.reports == []
    run = harness.client.search_runs([harness.client.get_experiment_by_name("fail").experiment_id])[0]
    assert run.info.status == "FAILED" and run.data.tags["gantune.failure_reason"] == "ValueError: flaky disk"


def test_final_failure_classification():
    diverged = DivergedError("x")
    assert final_failure(diverged) is diverged
    assert isinstance(final_failure(torch.OutOfMemoryError("y")), TrialOOMError)
    assert final_failure(RuntimeError("z")) is None

