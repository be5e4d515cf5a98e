"""`gantune gc` and `--keep-artifacts best`'s cleanup against real MLflow stores: a SQLite store
with file artifacts, and a real `mlflow server` whose artifacts are proxied (deleted over HTTP)."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from gantune.search import gc, tracking
from gantune.search.cli import main
from gantune.search.space import load_space

ROOT = Path(__file__).resolve().parents[2]
SPACE = load_space(ROOT / "spaces" / "demo.yaml")  # 3 folds, val_auc (max)
GENERATOR_BYTES = 5000


@pytest.fixture(params=["sqlite", "server"])
def tracking_uri(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'mlflow.db'}"
        return
    from gantune.mlflow_server import ServerConfig, free_port, resolve, running_server

    cfg = resolve(ServerConfig(port=free_port(), workers=1, workdir=tmp_path))
    with running_server(cfg, tmp_path / "server.log") as url:
        yield url


def log_trial(client, experiment_id, parent, tmp_path, trial_id, auc, folds_done, generator=True):
    tags = {"mlflow.parentRunId": parent, "gantune.role": "trial", "gantune.trial_id": trial_id}
    run_id = client.create_run(experiment_id, tags=tags).info.run_id
    metrics = [Metric("val_auc", auc, 0, folds_done), Metric("folds_done", folds_done, 0, folds_done)]
    metrics += [Metric("fold_val_auc", auc, 0, i) for i in range(folds_done)]
    client.log_batch(run_id, metrics=metrics)
    if generator:
        folder = tmp_path / trial_id / "generator"
        folder.mkdir(parents=True)
        (folder / "generator.pt").write_bytes(b"w" * (GENERATOR_BYTES - 100))
        (folder / "MLmodel").write_bytes(b"m" * 100)
        client.log_artifacts(run_id, str(folder), "generator")
    client.log_text(run_id, "plot", "plots/roc.png")  # light: always kept
    client.set_terminated(run_id, status="FINISHED" if folds_done == 3 else "KILLED")
    return run_id


def a_search(client, tracking_uri, tmp_path, name="gc"):
    experiment_id = tracking.ensure_experiment(client, name, tracking_uri)
    parent = tracking.start_parent_run(client, experiment_id, SPACE.resolved())
    runs = {
        "best": log_trial(client, experiment_id, parent, tmp_path, "best", 0.9, 3),
        "second": log_trial(client, experiment_id, parent, tmp_path, "second", 0.8, 3),
        "registered": log_trial(client, experiment_id, parent, tmp_path, "registered", 0.7, 3),
        # Stopped early with a high running mean: never ranked above a complete trial.
        "stopped": log_trial(client, experiment_id, parent, tmp_path, "stopped", 0.95, 1),
        "real_only": log_trial(client, experiment_id, parent, tmp_path, "real_only", 0.6, 3, generator=False),
    }
    client.set_terminated(parent, status="FINISHED")
    return experiment_id, parent, runs


def has_generator(client, run_id) -> bool:
    return bool(client.list_artifacts(run_id, "generator"))


def test_gc_dry_run_says_what_it_deletes_then_deletes_it(tracking_uri, tmp_path, capsys):
    client = MlflowClient(tracking_uri)
    _, _, runs = a_search(client, tracking_uri, tmp_path)
    client.create_registered_model("gc-generator")
    client.create_model_version("gc-generator", f"runs:/{runs['registered']}/generator", run_id=runs["registered"])
    argv = ["gc", "--experiment", "gc", "--keep-top", "1", "--tracking-uri", tracking_uri]

    assert main(argv) == 0
    out = capsys.readouterr().out
    doomed = {runs["second"], runs["stopped"]}  # not top 1, not registered, and have a generator
    assert {line.split("runs:/")[1].split("/")[0] for line in out.splitlines() if "would delete" in line} == doomed
    assert f"dry run: {2 * GENERATOR_BYTES / 1e6:.2f} MB ({2 * GENERATOR_BYTES} bytes) in 2" in out
    assert all(has_generator(client, r) for r in doomed)  # nothing deleted yet

    assert main([*argv, "--yes"]) == 0
    out = capsys.readouterr().out
    assert f"freed {2 * GENERATOR_BYTES / 1e6:.2f} MB ({2 * GENERATOR_BYTES} bytes) in 2" in out
    assert not any(has_generator(client, r) for r in doomed)
    assert has_generator(client, runs["best"]) and has_generator(client, runs["registered"])
    assert client.list_artifacts(runs["second"], "plots")  # light artifacts stay
    assert main([*argv, "--yes"]) == 0 and "freed 0.00 MB (0 bytes) in 0" in capsys.readouterr().out


def test_keep_best_only_keeps_the_best_trials_generator(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment_id, parent, runs = a_search(client, uri, tmp_path)
    deleted = gc.keep_best_only(client, experiment_id, parent)
    assert {d.run_id for d in deleted} == {runs["second"], runs["registered"], runs["stopped"]}
    assert [r for r in runs.values() if has_generator(client, r)] == [runs["best"]]


def test_gc_refuses_an_unknown_experiment_and_a_negative_keep_top(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowClient(uri).search_experiments()  # the store exists (gc never creates one)
    assert main(["gc", "--experiment", "nope", "--keep-top", "1", "--tracking-uri", uri]) == 2
    assert "no MLflow experiment named 'nope'" in capsys.readouterr().err
    assert main(["gc", "--experiment", "nope", "--keep-top", "-1", "--tracking-uri", uri]) == 2
    assert "--keep-top must be >= 0" in capsys.readouterr().err
