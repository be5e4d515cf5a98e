"""Commands that read a search never create a store: run in another folder (the default
store is per folder) they say which store they looked in, and a wrong experiment name lists the
experiments that store has."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from gantune.search import cli

READERS = [
    ["promote", "--experiment", "demo"],
    ["report", "--experiment", "demo"],
    ["evaluate", "--experiment", "demo"],
    ["generate", "models:/demo-generator@champion", "--num", "2", "--out", "synth"],
    ["dashboard", "--experiment", "demo"],
    ["gc", "--experiment", "demo", "--keep-top", "1"],
]


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """An empty folder with no MLflow store, the default store (no MLFLOW_TRACKING_URI)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


@pytest.mark.parametrize("argv", READERS, ids=lambda a: a[0])
def test_a_reader_in_another_folder_creates_no_store_and_names_the_one_it_looked_for(argv, elsewhere, capsys):
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert code == cli.EXIT_USAGE
    assert not (elsewhere / "mlflow.db").exists() and list(elsewhere.iterdir()) == []
    assert f"no MLflow store at sqlite:///{elsewhere / 'mlflow.db'}" in err
    assert "default store is mlflow.db in the folder gantune runs from" in err and "--tracking-uri" in err
    assert "Traceback" not in err


def test_a_missing_file_store_is_not_created_either(elsewhere, capsys, monkeypatch):
    """A path is MLflow's file store, which it refuses unless MLFLOW_ALLOW_FILE_STORE is set: without
    it the path is refused with the sqlite:/// spelling, with it a missing one is not created."""
    argv = ["report", "--experiment", "demo", "--tracking-uri", str(elsewhere / "mlruns")]
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    assert cli.main(argv) == cli.EXIT_USAGE and not (elsewhere / "mlruns").exists()
    assert f"is a path, not a tracking URI (MLflow 3.17 refuses its file store): for a SQLite store write " \
           f"sqlite:///{elsewhere / 'mlruns' / 'mlflow.db'}" in capsys.readouterr().err
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    code = cli.main(argv)
    assert code == cli.EXIT_USAGE and not (elsewhere / "mlruns").exists()
    assert f"no MLflow store at {elsewhere / 'mlruns'}" in capsys.readouterr().err


def test_an_unknown_experiment_names_the_store_and_the_experiments_it_has(elsewhere, capsys):
    uri = f"sqlite:///{elsewhere / 'mlflow.db'}"
    client = MlflowClient(uri)
    for name in ("demo", "breastmnist"):
        client.create_experiment(name)
    code = cli.main(["report", "--experiment", "dmeo"])
    err = capsys.readouterr().err
    assert code == cli.EXIT_USAGE
    assert f"no MLflow experiment named 'dmeo' in {uri} (it has 'breastmnist', 'demo')" in err
    assert "default store is mlflow.db in the folder gantune runs from" in err
