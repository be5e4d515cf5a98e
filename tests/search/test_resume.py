"""The resume record and the end-of-search sweep of trial runs, against a real SQLite store."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import pytest
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from gantune.search.callbacks import ORPHAN_REASON, sweep_trial_runs
from gantune.search.resume import (
    ResumeError,
    SearchRecord,
    auto_record,
    mark,
    read_records,
    record_to_resume,
    record_uri,
    tune_name,
    tune_path,
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
    assert read_records(storage, "exp") == []
    write_record(storage, record)
    path = tmp_path / "ray_results" / "exp.gantune" / "exp-abcdef01.json"
    assert record_uri(storage, record) == str(path)
    assert json.loads(path.read_text())["parent_run_id"] == record.parent_run_id
    assert read_records(storage, "exp") == [record]
    mark(storage, record, "finished")
    assert [r.status for r in read_records(storage, "exp")] == ["finished"]


def test_two_searches_of_one_experiment_on_one_storage_path_keep_their_own_records(tmp_path):
    """They used to share <experiment>.gantune.json, so the second overwrote the first's record
    and --resume continued the wrong search."""
    storage = str(tmp_path / "ray_results")
    first = make_record(tmp_path, started="2026-12-01T10:00:00Z")
    other_space = {**RESOLVED, "fixed": {"gan.steps": 99, "data.folds": 2}}
    second = make_record(tmp_path, parent_run_id="99999999ffff", tune_name=tune_name("exp", "99999999ffff"),
                         resolved=other_space, started="2026-12-01T11:00:00Z")
    write_record(storage, first)
    write_record(storage, second)
    assert read_records(storage, "exp") == [second, first]  # newest first, neither lost
    uri = first.tracking_uri
    # A bare --resume picks the unfinished search with this space and options...
    assert record_to_resume(storage, "exp", RESOLVED, uri) == first
    assert record_to_resume(storage, "exp", other_space, uri) == second
    # ...or is told to name one when both (or neither) match.
    write_record(storage, replace(second, resolved=RESOLVED))
    with pytest.raises(ResumeError, match="2 unfinished searches .*abcdef0123456789.*--resume PARENT_RUN_ID"):
        record_to_resume(storage, "exp", RESOLVED, uri)
    assert record_to_resume(storage, "exp", RESOLVED, uri, which="abcdef01") == first
    with pytest.raises(ResumeError, match="no search with parent run 0123abcd"):
        record_to_resume(storage, "exp", RESOLVED, uri, which="0123abcd")
    # --resume auto: the newest restorable unfinished search with this configuration.
    restorable = {tune_path(storage, first)}
    assert auto_record(storage, "exp", RESOLVED, uri, restorable.__contains__) == first
    assert auto_record(storage, "exp", other_space, uri, restorable.__contains__) is None  # another search
    mark(storage, first, "finished")
    assert auto_record(storage, "exp", RESOLVED, uri, restorable.__contains__) is None
    assert record_to_resume(storage, "exp", RESOLVED, uri).parent_run_id == second.parent_run_id


def test_a_record_from_before_records_were_per_search_is_still_resumed(tmp_path):
    storage = tmp_path / "ray_results"
    storage.mkdir()
    record = make_record(tmp_path, status="interrupted")
    legacy = {k: v for k, v in asdict(record).items() if k != "started"}  # written before 'started' existed
    (storage / "exp.gantune.json").write_text(json.dumps(legacy))
    assert record_to_resume(str(storage), "exp", RESOLVED, record.tracking_uri) == record
    mark(str(storage), record, "finished")  # lands in the per-search folder, which wins over the old file
    assert [r.status for r in read_records(str(storage), "exp")] == ["finished"]


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
    # Stopped by the scheduler: FINISHED in MLflow (not a red "killed"), the outcome as its tag.
    assert status[stopped].status == "FINISHED" and status[errored].status == "FAILED"
    assert client.get_run(stopped).data.tags["gantune.outcome"] == "stopped early"
    assert client.get_run(errored).data.tags["gantune.outcome"] == "failed"
    assert status[done].status == "FINISHED"
    assert status[orphan].status == "KILLED" and status[orphan].lifecycle_stage == "deleted"
    assert client.get_run(orphan).data.tags["gantune.failure_reason"] == ORPHAN_REASON
    assert status[other].status == "RUNNING"  # another search's run is not touched
    active = client.search_runs([exp], "tags.`gantune.role` = 'trial'", run_view_type=ViewType.ACTIVE_ONLY)
    assert orphan not in {r.info.run_id for r in active}
    # A stop signal ended the search: what was still running is interrupted (KILLED), for --resume.
    cut = trial("cut")
    sweep_trial_runs(client, exp, parent, {"cut": "TERMINATED"}, interrupted=True)
    assert client.get_run(cut).info.status == "KILLED"
    assert client.get_run(cut).data.tags["gantune.outcome"] == "interrupted"


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


def test_a_restored_searcher_fails_only_the_optuna_trials_no_tune_trial_will_report(tmp_path):
    """A driver killed after asking Optuna for a trial but before Tune's next experiment checkpoint
    leaves that trial RUNNING in the persistent study, unknown to the restored searcher."""
    import optuna
    from ray import cloudpickle
    from ray.tune.search import SearchGenerator

    from gantune.search.space import load_space
    from gantune.search.tuner import make_searcher

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    space = load_space(Path(__file__).resolve().parents[2] / "spaces" / "demo.yaml")

    generator = SearchGenerator(make_searcher(space, seed=0, storage=storage, study_name="demo-abcdef01"))
    generator.set_search_properties("val_auc", "max", {})
    pickled = cloudpickle.dumps(generator)  # as Tune pickles it with the Tuner, before any trial
    first = generator.searcher  # the ConcurrencyLimiter
    first.suggest("done")
    first.on_trial_complete("done", {"val_auc": 0.7})
    first.suggest("live")  # in flight at Tune's checkpoint: the restored Tune trial reports it later
    checkpoint = tmp_path / "tune_dir"
    checkpoint.mkdir()
    SearchGenerator(first).save_to_dir(str(checkpoint), session_str="s")
    first.searcher._ot_study.ask()  # the zombie: asked after the checkpoint, then the driver died

    restored = cloudpickle.loads(pickled)  # Tuner.restore, then the searcher's state from the checkpoint
    restored.restore_from_dir(str(checkpoint))
    study = optuna.load_study(study_name="demo-abcdef01", storage=storage)
    states = [t.state.name for t in study.trials]
    assert states == ["COMPLETE", "RUNNING", "FAIL"]
    restored.searcher.on_trial_complete("live", {"val_auc": 0.8})  # the live trial can still report
    assert study.trials[1].state.name == "COMPLETE"


def test_a_trial_the_persistent_study_finished_after_tune_s_checkpoint_reports_again_harmlessly(tmp_path):
    """Defect 14b with the persisted study: the trial finished (and the study recorded it) after
    Tune's last experiment checkpoint; restored, it replays its folds, and Optuna would refuse the
    reports of a finished trial (UpdateFinishedTrialError, a TuneError ending the resumed search)."""
    import optuna
    from ray import cloudpickle
    from ray.tune.search import SearchGenerator

    from gantune.search.space import load_space
    from gantune.search.tuner import make_searcher

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    space = load_space(Path(__file__).resolve().parents[2] / "spaces" / "demo.yaml")
    generator = SearchGenerator(make_searcher(space, seed=0, storage=storage, study_name="demo-abcdef02"))
    generator.set_search_properties("val_auc", "max", {})
    pickled = cloudpickle.dumps(generator)
    first = generator.searcher
    first.suggest("lagged")  # in flight at Tune's checkpoint...
    checkpoint = tmp_path / "tune_dir"
    checkpoint.mkdir()
    SearchGenerator(first).save_to_dir(str(checkpoint), session_str="s")
    first.on_trial_result("lagged", {"val_auc": 0.6, "training_iteration": 1})
    first.on_trial_complete("lagged", {"val_auc": 0.7})  # ...then finished before the kill

    restored = cloudpickle.loads(pickled)
    restored.restore_from_dir(str(checkpoint))
    restored.searcher.on_trial_result("lagged", {"val_auc": 0.6, "training_iteration": 1})  # the replay
    restored.searcher.on_trial_complete("lagged", {"val_auc": 0.7})
    (trial,) = optuna.load_study(study_name="demo-abcdef02", storage=storage).trials
    assert trial.state.name == "COMPLETE" and trial.value == 0.7 and trial.intermediate_values == {1: 0.6}
