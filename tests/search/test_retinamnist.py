"""RetinaMNIST (5 grades, RGB, 28 px): a smoke search end to end logs 5-class macro metrics, one
GAN per grade with RGB sample grids, and the multiclass plots."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


def test_retinamnist_smoke_search(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.run(
        [sys.executable, "-m", "gantune.search.cli", "search", str(ROOT / "spaces" / "retinamnist.yaml"),
         "--smoke-test", "--experiment", "retina", "--quiet"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=540,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("retina")
    parent = client.search_runs([experiment.experiment_id], "tags.`gantune.role` = 'search'")[0]
    summary = json.loads(
        Path(client.download_artifacts(parent.info.run_id, "data/summary.json", str(tmp_path))).read_text()
    )
    assert summary["image_shape"] == [3, 28, 28] and len(summary["class_names"]) == 5
    assert summary["pool_class_counts"] == [540, 140, 234, 214, 72]  # official train + val
    trials = client.search_runs([experiment.experiment_id], "tags.`gantune.role` = 'trial'")
    assert len(trials) == 2
    for run in trials:
        for name in ("auc", "accuracy", "sensitivity", "specificity", "precision", "f1"):
            assert 0 <= run.data.metrics[f"val_{name}"] <= 1  # macro over 5 grades; nan would fail here
    gan = next(r for r in trials if float(r.data.params["synth.ratio"]) > 0)
    paths = {a.path for a in client.list_artifacts(gan.info.run_id, "samples")}
    assert paths == {f"samples/class_{c}_grade{c}.png" for c in range(5)}  # one GAN per grade
    assert {a.path for a in client.list_artifacts(gan.info.run_id, "plots")} >= {
        "plots/roc.png",
        "plots/confusion_matrix.png",
    }
    import mlflow.pyfunc
    import pandas as pd

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    model = mlflow.pyfunc.load_model(f"runs:/{gan.info.run_id}/generator")
    images = model.predict(pd.DataFrame({"label": [4], "num": [2]}))
    assert images[0].shape == (2, 3, 28, 28)  # the grade-4 generator makes RGB images
