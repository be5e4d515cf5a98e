"""The driver's MLflow writes off Tune's control loop (callbacks.RunWriter), trial runs closed by
the run id the trial reports, and `--max-concurrent auto` from the cluster's schedulable slots
(a real local Ray with known resources)."""

from __future__ import annotations

import pickle
import tempfile
import threading
from types import SimpleNamespace

import pytest
from mlflow.tracking import MlflowClient

from gantune.search.callbacks import CloseTrialRuns
from gantune.search.resources import cluster_slots, schedulable_slots
from gantune.trainables.tracking import RUN_ID_KEY


@pytest.fixture
def search(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("w", artifact_location=(tmp_path / "a").as_uri())
    parent = client.create_run(experiment, tags={"gantune.role": "search"}).info.run_id
    return uri, client, experiment, parent


def trial_run(client, experiment, parent, trial_id, tagged=True):
    tags = {"mlflow.parentRunId": parent, "gantune.role": "trial"}
    if tagged:
        tags["gantune.trial_id"] = trial_id
    return client.create_run(experiment, tags=tags).info.run_id


def trial(trial_id, run_id=None, folds_done=1):
    result = {"folds_done": folds_done, **({RUN_ID_KEY: run_id} if run_id else {})}
    return SimpleNamespace(trial_id=trial_id, last_result=result, error_msg="boom")


def test_trial_runs_are_closed_by_the_reported_run_id_on_a_writer_thread(search):
    uri, client, experiment, parent = search
    # No trial-id tag: only the reported run id can find this run (a tag search would miss it).
    stopped = trial_run(client, experiment, parent, "stopped", tagged=False)
    finished = trial_run(client, experiment, parent, "finished", tagged=False)
    client.set_terminated(finished, status="FINISHED")  # a trial that ended its own run
    early = trial_run(client, experiment, parent, "early")  # died before its first report: no run id

    callback = CloseTrialRuns(uri, experiment, parent)
    gate = threading.Event()
    callback.writer.submit(lambda c: gate.wait(60))  # a tracking server that does not answer yet
    callback.on_trial_complete(0, [], trial("stopped", stopped, folds_done=1))
    callback.on_trial_complete(0, [], trial("finished", finished, folds_done=2))
    callback.on_trial_error(0, [], trial("early", folds_done=None))
    # Tune's loop went on: nothing was written while the writer was held up.
    assert client.get_run(stopped).info.status == "RUNNING"
    gate.set()
    callback.on_experiment_end([])  # flushes: every queued write is done when it returns
    # Stopped early by the scheduler: FINISHED (not a red "killed"), its outcome as the tag
    assert client.get_run(stopped).info.status == "FINISHED"
    assert client.get_run(stopped).data.tags["gantune.outcome"] == "stopped early"
    assert client.get_run(finished).info.status == "FINISHED"  # never overwritten
    run = client.get_run(early)
    assert run.info.status == "FAILED" and run.data.tags["gantune.failure_reason"] == "boom"
    # Pickled with the Tuner (a restored search): without its thread, which it starts again.
    restored = pickle.loads(pickle.dumps(callback))
    assert restored._writer is None and restored.writer.flush(timeout=30)


def test_a_callback_pickled_before_the_writer_existed_still_closes_runs(search):
    """A search started by an older gantune pickled CloseTrialRuns with its MlflowClient; --resume
    unpickles that state into this class."""
    uri, client, experiment, parent = search
    run_id = trial_run(client, experiment, parent, "t")
    old = CloseTrialRuns.__new__(CloseTrialRuns)
    old.__dict__.update(client=MlflowClient(uri), experiment_id=experiment, parent_run_id=parent)
    restored = pickle.loads(pickle.dumps(old))
    restored.on_trial_complete(0, [], trial("t", run_id))
    restored.on_experiment_end([])
    assert client.get_run(run_id).data.tags["gantune.outcome"] == "stopped early"  # closed by the writer


def test_a_failed_write_is_reported_and_the_next_ones_still_run(search, capsys):
    uri, client, experiment, parent = search
    run_id = trial_run(client, experiment, parent, "t")
    callback = CloseTrialRuns(uri, experiment, parent)
    callback.on_trial_complete(0, [], trial("gone", "0" * 32))  # a run id the store does not know
    callback.on_trial_complete(0, [], trial("t", run_id))
    callback.on_experiment_end([])
    assert "an MLflow write of the driver failed" in capsys.readouterr().err
    assert client.get_run(run_id).data.tags["gantune.outcome"] == "stopped early"  # the next write ran


@pytest.mark.parametrize("nodes, cpus, gpus, slots", [
    ([{"CPU": 8}], 1, 0, 8),
    ([{"CPU": 3}, {"CPU": 3}], 2, 0, 2),  # per node: a trial never spans two
    ([{"CPU": 8, "GPU": 1}], 2, 0.25, 4),
    ([{"CPU": 8, "GPU": 1}], 1, 0.25, 4),  # the GPU share is the bound
    ([{"CPU": 8, "GPU": 1}, {"CPU": 4}], 1, 1, 1),  # a CPU-only node holds no GPU trial
    ([{"CPU": 1}], 2, 0, 1),  # at least one
])
def test_schedulable_slots(nodes, cpus, gpus, slots):
    assert schedulable_slots(nodes, cpus, gpus) == slots


def test_auto_concurrency_from_a_real_local_ray_with_known_resources():
    import ray

    with tempfile.TemporaryDirectory(prefix="rclu", dir="/tmp") as tmp:
        ray.init(address="local", num_cpus=3, num_gpus=2, include_dashboard=False, _temp_dir=tmp,
                 log_to_driver=False)
        try:
            assert cluster_slots(1, 0) == 3
            assert cluster_slots(2, 0) == 1
            assert cluster_slots(1, 0.5) == 3  # 4 GPU shares, 3 CPUs
            assert cluster_slots(1, 1) == 2
        finally:
            ray.shutdown()


def test_max_concurrent_takes_auto_and_keeps_it_in_the_resolved_space():
    from gantune.search.cli import build_parser, resolve_space

    args = build_parser(load=("search",)).parse_args(["search", "spaces/demo.yaml", "--max-concurrent", "auto"])
    space = resolve_space(args)
    assert space.search.max_concurrent == "auto" and space.resolved()["search"]["max_concurrent"] == "auto"
    with pytest.raises(SystemExit):
        build_parser(load=("search",)).parse_args(["search", "spaces/demo.yaml", "--max-concurrent", "many"])


def test_a_search_with_auto_concurrency_limits_its_searcher_to_the_clusters_slots(tmp_path, monkeypatch,
                                                                                   breast_splits):
    """run_search resolves 'auto' after joining Ray (a real local Ray of 3 CPUs), hands the number
    to the searcher, and keeps 'auto' in the search record (a resume on another cluster matches)."""
    import ray

    from gantune.search import resume, tuner
    from gantune.search.options import SearchOptions
    from gantune.search.space import load_space

    space = load_space("spaces/demo.yaml").with_overrides({"search.max_concurrent": "auto"})
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    options = SearchOptions(experiment="auto", tracking_uri=uri, storage_path=str(tmp_path / "ray_results"))
    seen = {}

    class Stop:
        def fit(self):
            raise RuntimeError("stop here")

    def capture(space, settings, options, record):
        seen["limit"] = tuner.make_searcher(space, options.seed).max_concurrent
        return Stop()

    ray_tmp = tempfile.mkdtemp(prefix="rclu", dir="/tmp")
    monkeypatch.setattr(tuner, "init_ray", lambda options, num_cpus: ray.init(
        address="local", num_cpus=3, include_dashboard=False, _temp_dir=ray_tmp, log_to_driver=False))
    monkeypatch.setattr(tuner, "make_tuner", capture)
    try:
        with pytest.raises(tuner.SearchFailed, match="stop here"):
            tuner.run_search(space, breast_splits, options)
    finally:
        ray.shutdown()
    assert seen["limit"] == 3  # 3 CPUs / 1 CPU per trial
    (record,) = resume.read_records(options.storage_path, "auto")
    assert record.resolved["search"]["max_concurrent"] == "auto"
