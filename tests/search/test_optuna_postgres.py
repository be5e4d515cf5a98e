"""`--optuna-storage postgresql://...`: the search's Optuna study lives in the PostgreSQL at
127.0.0.1:5432, named after the search, and holds every trial with the parameters and value that
MLflow logged for it (so a study outlives its driver, and other tools can read it)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from gantune.mlflow_server.server import with_installed_postgres_driver

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.postgres, pytest.mark.e2e, pytest.mark.timeout(600)]


def test_search_keeps_its_optuna_study_in_postgresql(postgres_db, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
    env.update({"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"})
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("gantune")), "search", str(ROOT / "spaces" / "demo.yaml"), "--smoke-test",
         "--num-samples", "3", "--experiment", "pg", "--optuna-storage", postgres_db, "--quiet"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=540,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("pg")
    parent = client.search_runs([experiment.experiment_id], "tags.`gantune.role` = 'search'")[0]
    runs = client.search_runs([experiment.experiment_id], "tags.`gantune.role` = 'trial'")
    assert len(runs) == 3

    storage = with_installed_postgres_driver(postgres_db)  # SQLAlchemy 2.1 reads bare postgresql:// as psycopg 3
    names = optuna.get_all_study_names(storage)
    assert names == [f"pg-{parent.info.run_id[:8]}"]  # the search's Tune directory name
    study = optuna.load_study(study_name=names[0], storage=storage)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 3
    logged = sorted((r.data.metrics["val_auc"], float(r.data.params["synth.ratio"])) for r in runs)
    stored = sorted((t.value, t.params["synth.ratio"]) for t in study.trials)
    assert [s[1] for s in stored] == pytest.approx([g[1] for g in logged])  # same configurations
    assert [s[0] for s in stored] == pytest.approx([g[0] for g in logged])  # same values
    assert study.trials[0].params["synth.ratio"] == 0.0  # the real-only baseline is Optuna's first point
