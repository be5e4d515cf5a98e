"""A trial run holds one metric point per key and step, whatever restores and retries happen:
a fold computed again after a restore (its checkpoint died with the driver) reopens the run and
logs no second point; a request MLflow's client resends carries the same timestamps, which the
store drops. Against a real SQLite store; plots and sample grids are stubbed."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import pytest
from mlflow.tracking import MlflowClient

from gantune.trainables.config import TrialConfig
from gantune.trainables.tracking import TrialRun, fold_points

CFG = TrialConfig.from_flat({"data.folds": 3})


def fold(i: int):
    synthetic = SimpleNamespace(history={"g_loss_c0": 0.1 * i}, kept_fraction={0: 0.9}, gans={}, refiners={})
    return SimpleNamespace(fold=i, metrics={"auc": 0.5 + i / 10}, gen_metrics={"fid": 3.0}, synthetic=synthetic)


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setattr(TrialRun, "_log_plots", lambda self, results, tmp: None)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("once", artifact_location=(tmp_path / "a").as_uri())
    parent = client.create_run(exp).info.run_id
    settings = SimpleNamespace(tracking_uri=uri, experiment_id=exp, parent_run_id=parent, keep_artifacts="complete",
                               data=SimpleNamespace(pool=SimpleNamespace(class_names=("a", "b"))))
    return client, settings


def points_per_step(client: MlflowClient, run_id: str) -> dict[str, Counter]:
    keys = client.get_run(run_id).data.metrics
    return {k: Counter(m.step for m in client.get_metric_history(run_id, k)) for k in keys}


def log(run: TrialRun, results: list, i: int) -> None:
    results.append(fold(i))
    run.log_fold(results[-1], results, {"val_auc": 0.5 + i / 10})


def test_a_fold_run_again_after_a_restore_logs_no_second_point(store):
    client, settings = store
    run, results = TrialRun.open(settings, "t1", params={}, cfg=CFG), []
    log(run, results, 0)
    log(run, results, 1)  # ...then the driver is killed before fold 2's checkpoint reached Tune
    restored, again = TrialRun.open(settings, "t1", params={}, cfg=CFG), results[:1]
    assert restored.run_id == run.run_id and restored.logged_folds == {1, 2}
    log(restored, again, 1)  # fold 1 computed again from the older checkpoint
    log(restored, again, 2)
    counts = points_per_step(client, run.run_id)
    assert {"folds_done", "val_auc", "fold_val_auc", "fold_fid", "g_loss_c0", "synth_kept_fraction_c0"} <= set(counts)
    for key, per_step in counts.items():
        assert all(n == 1 for n in per_step.values()), (key, per_step)
    assert sorted(counts["folds_done"]) == [1, 2, 3] and sorted(counts["fold_val_auc"]) == [0, 1, 2]


def test_a_resent_request_adds_no_point(store):
    """What MLflow's client does after a server outage: the same request body again."""
    client, settings = store
    run = TrialRun.open(settings, "t2", params={}, cfg=CFG)
    points = fold_points(fold(0), {"val_auc": 0.5}, 1)
    sent = []
    real_log_batch = client.log_batch

    def log_batch_twice(run_id, metrics=(), **kwargs):  # the first reply was lost, so it is sent again
        sent.append(len(metrics))
        real_log_batch(run_id, metrics=metrics, **kwargs)
        real_log_batch(run_id, metrics=metrics, **kwargs)

    run.client = SimpleNamespace(log_batch=log_batch_twice)
    run.log_metrics(points)
    assert sent == [len(points)]  # one request for the whole fold
    for key, per_step in points_per_step(client, run.run_id).items():
        assert all(n == 1 for n in per_step.values()), (key, per_step)


def test_folds_done_is_the_last_point_of_a_fold():
    """Its point is what a reopened run reads as 'this fold reached the store'."""
    assert fold_points(fold(2), {"val_auc": 0.7}, 3)[-1] == ("folds_done", 3, 3)
