"""The resume record and the end-of-search sweep of trial runs, against a real SQLite store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from gantune.search.callbacks import ORPHAN_REASON, sweep_trial_runs
from gantune.search.resume import (
    ResumeError,
    SearchRecord,
    mark,
    read_record,
    record_to_resume,
    record_uri,
    tune_name,
    write_record,
)

RESOLVED = {"name": "demo", "space_file": "spaces/demo.yaml", "fixed": {"gan.steps": 10, "data.folds": 2},
            "searched": {"synth.ratio": {"uniform": [0.0, 2.0]}}, "search": {"num_samples": 4, "metric": "val_auc"}}


def make_record(tmp_path, **changes) -> SearchRecord:
    values = dict(
        experiment="exp",
        experiment_id="1",
        parent_run_id="abcdef0123456789",
        tune_name=tune_name("exp", "abcdef0123456789"),
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        resolved=RESOLVED,
    )
    return SearchRecord(**{**values, **changes})


def test_record_round_trip_next_to_the_tune_dir(tmp_path):
    storage = str(tmp_path / "ray_results")
    record = make_record(tmp_path)
    assert record.tune_name == "exp-abcdef01"
    assert read_record(storage, "exp") is None
    write_record(storage, record)
    assert record_uri(storage, "exp") == str(tmp_path / "ray_results" / "exp.gantune.json")
    assert (
        json.loads((tmp_path / "ray_results" / "exp.gantune.json").read_text())["parent_run_id"] == record.parent_run_id
    )
    assert read_record(storage, "exp") == record
    mark(storage, record, "finished")
    assert read_record(storage, "exp").status == "finished"


def test_resume_refusals_say_why(tmp_path):
    storage = str(tmp_path / "ray_results")
    record = make_record(tmp_path)
    with pytest.raises(ResumeError, match="no search of experiment 'exp' to resume"):
        record_to_resume(storage, "exp", RESOLVED, record.tracking_uri)
    write_record(storage, record)
    # the space file path may differ (relative vs absolute); only the values matter
    assert record_to_resume(storage, "exp", {**RESOLVED, "space_file": "/abs/demo.yaml"}, record.tracking_uri) == record
    changed = {**RESOLVED, "fixed": {"gan.steps": 20, "data.folds": 2}}
    with pytest.raises(ResumeError, match=r"space changed .*fixed\.gan\.steps"):
        record_to_resume(storage, "exp", changed, record.tracking_uri)
    with pytest.raises(ResumeError, match="pass --tracking-uri"):
        record_to_resume(storage, "exp", RESOLVED, "sqlite:///other.db")
    mark(storage, record, "finished")
    with pytest.raises(ResumeError, match="already ended"):
        record_to_resume(storage, "exp", RESOLVED, record.tracking_uri)
    mark(storage, record, "failed")  # a search that raised can be resumed
    assert record_to_resume(storage, "exp", RESOLVED, record.tracking_uri).status == "failed"
    mark(storage, record, "interrupted")  # Ctrl-C: Tune saved its state
    assert record_to_resume(storage, "exp", RESOLVED, record.tracking_uri).status == "interrupted"


def test_sweep_closes_running_runs_and_deletes_orphans(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.create_experiment("sweep", artifact_location=(tmp_path / "a").as_uri())
    parent = client.create_run(exp, tags={"gantune.role": "search"}).info.run_id
    other_parent = client.create_run(exp, tags={"gantune.role": "search"}).info.run_id

    def trial(trial_id, status="RUNNING", parent_id=parent):
        tags = {"mlflow.parentRunId": parent_id, "gantune.role": "trial", "gantune.trial_id": trial_id}
        run_id = client.create_run(exp, tags=tags).info.run_id
        if status != "RUNNING":
            client.set_terminated(run_id, status=status)
        return run_id

    stopped, errored, done = trial("stopped"), trial("errored"), trial("done", "FINISHED")
    orphan, other = trial("orphan"), trial("elsewhere", parent_id=other_parent)
    counts = sweep_trial_runs(client, exp, parent, {"stopped": "TERMINATED", "errored": "ERROR", "done": "TERMINATED"})
    assert counts == {"closed": 2, "orphans_deleted": 1}
    status = {r: client.get_run(r).info for r in (stopped, errored, done, orphan, other)}
    assert status[stopped].status == "KILLED" and status[errored].status == "FAILED"
    assert status[done].status == "FINISHED"
    assert status[orphan].status == "KILLED" and status[orphan].lifecycle_stage == "deleted"
    assert client.get_run(orphan).data.tags["gantune.failure_reason"] == ORPHAN_REASON
    assert status[other].status == "RUNNING"  # another search's run is not touched
    active = client.search_runs([exp], "tags.`gantune.role` = 'trial'", run_view_type=ViewType.ACTIVE_ONLY)
    assert orphan not in {r.info.run_id for r in active}


def test_persistent_optuna_study_named_after_the_search_and_no_trial_left_running(tmp_path):
    import optuna

    from gantune.search.space import load_space
    from gantune.search.tuner import fail_stale_optuna_trials, make_searcher

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    space = load_space(Path(__file__).resolve().parents[2] / "spaces" / "demo.yaml")
    limiter = make_searcher(space, seed=0, storage=storage, study_name="demo-abcdef01")
    limiter.set_search_properties("val_auc", "max", {})
    assert limiter.suggest("t1") is not None  # an Optuna trial now RUNNING in the database
    study = optuna.load_study(study_name="demo-abcdef01", storage=storage)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.RUNNING]
    fail_stale_optuna_trials(storage, "demo-abcdef01")  # e.g. the trial of a killed driver
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.FAIL]
