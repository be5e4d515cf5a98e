"""The research recipe end to end at smoke size: `gantune search spaces/breastmnist.yaml
--smoke-test`, then the data-efficiency study of its best GAN trial with 1 draw, 1 seed and 2
train fractions; the evaluation run carries mde_auc and the frac_<f>_* metrics for both fractions
and they agree with its own predictions."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from gantune.search import stats
from mlflow.tracking import MlflowClient
from sklearn.metrics import roc_auc_score

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


def gantune(tmp_path, *args, timeout=780):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.run([sys.executable, "-m", "gantune.search.cli", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc.stdout


def test_recipe_smoke_search_then_smoke_study(tmp_path):
    gantune(tmp_path, "search", str(ROOT / "spaces" / "breastmnist.yaml"), "--smoke-test", "--experiment", "recipe",
            "--quiet")
    out = gantune(tmp_path, "evaluate", "--experiment", "recipe", "--trial", "best-gan", "--train-fraction", "0.5,1",
                  "--draws", "1", "--seeds", "1", "--cpus", "1")
    assert "power: the test split (42 positive, 114 negative)" in out
    assert "data efficiency: 1 draw(s) x 1 seed(s) per train fraction" in out

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("recipe")
    run = client.search_runs([experiment.experiment_id], "tags.`gantune.role` = 'evaluation'")[0]
    m = run.data.metrics
    assert m["frac_0.5_train_images"] == 274 and m["frac_1_train_images"] == 546  # half of each class, rounded up
    with np.load(client.download_artifacts(run.info.run_id, "predictions.npz", str(tmp_path))) as npz:
        labels = npz["labels"]
        for f in ("0.5", "1"):
            best = npz[f"proba_best_config_f{f}"][0][:, 0]
            aucs = {b: roc_auc_score(labels == 0, npz[f"proba_{b}_f{f}"][0][:, 0])
                    for b in ("real_only", "classic_aug", "trivial_aug")}
            strongest = max(aucs, key=aucs.get)
            assert m[f"frac_{f}_delta_auc"] == pytest.approx(roc_auc_score(labels == 0, best) - aucs[strongest])
            assert m[f"frac_{f}_delta_auc_lo"] <= m[f"frac_{f}_delta_auc"] <= m[f"frac_{f}_delta_auc_hi"]
    baselines = client.search_runs([experiment.experiment_id], "tags.`gantune.baseline` != ''")
    assumed = min(max(max(r.data.metrics["val_auc"] for r in baselines), 0.5), 0.99)  # the best baseline's CV AUC
    assert m["mde_auc"] == pytest.approx(stats.min_detectable_auc_delta(assumed, 42, 114))
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"data_efficiency.png", "data_efficiency.csv", "predictions.npz"} <= artifacts
