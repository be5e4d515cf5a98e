"""Issue 27 end to end: a --smoke-test search of spaces/breastmnist_uses.yaml (local Ray, SQLite
MLflow) whose GAN trial pretrains on synthetic images then fine-tunes on the mixed set, selects its
synthetic images with a real-only classifier and fills the minority class up to balance with its
own ratio; the trial run records all of it and the leaderboard shows the acceptance rate."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from gantune.trainables.config import TrialConfig

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

USES = {
    "synth.use": "mix+pretrain",
    "synth.select": "confidence+feature",
    "synth.classes": "balance",
    # A smoke-test GAN (10 steps) and scorer (20 steps) are far from trained: a lax selection, so
    # most GAN trials fill their counts and report a rate (one whose images all lie beyond the
    # farthest real image in feature space is rejected, also an outcome checked below).
    "synth.select_confidence": 0.05,
    "synth.select_distance": 1.0,
}


@pytest.fixture(scope="module")
def uses_search(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("uses")
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_LOGGING_LEVEL")}
    sets = [a for key, value in USES.items() for a in ("--set", f"{key}={value}")]
    proc = subprocess.run(
        [sys.executable, "-m", "gantune.search.cli", "search", str(ROOT / "spaces" / "breastmnist_uses.yaml"),
         "--smoke-test", "--experiment", "uses", "--num-samples", "4", "--quiet", *sets],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=840,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("uses")
    runs = [r for r in client.search_runs([experiment.experiment_id]) if "mlflow.parentRunId" in r.data.tags]
    return proc, client, runs


def test_the_gan_trials_ran_the_three_uses_and_logged_their_acceptance_rate(uses_search):
    _, client, runs = uses_search
    gan_runs = [r for r in runs if "gantune.baseline" not in r.data.tags]
    assert len(runs) == 4 and gan_runs
    selected = [r for r in gan_runs if "synth_accept_rate" in r.data.metrics]
    assert selected, [r.data.tags.get("gantune.failure_reason") for r in gan_runs]
    for run in gan_runs:
        if run in selected:  # filled its counts: finished (or stopped early by ASHA), with its rate
            assert run.info.status == "FINISHED" and 0 < run.data.metrics["synth_accept_rate"] <= 1
        else:  # a generator whose images the scorer does not recognise: rejected, with the reason
            assert run.data.tags["gantune.outcome"] == "rejected", run.data.tags.get("gantune.failure_reason")
            assert run.data.tags["gantune.failure_reason"].startswith("SelectionError: synthetic selection kept")
    # Recorded on the run: the searched per-class ratio as a param, the whole config as JSON,
    # from which the trial is rebuilt as it ran (what `evaluate` does).
    run = selected[0]
    assert "synth.class_ratio.0" in run.data.params and "synth.use" not in run.data.params  # fixed by --set
    path = client.download_artifacts(run.info.run_id, "config/trial_config.json")
    cfg = TrialConfig.from_flat(json.loads(Path(path).read_text()))
    assert (cfg.synth.use, cfg.synth.select, cfg.synth.classes) == ("mix+pretrain", "confidence+feature", "balance")
    assert cfg.synth.class_ratio == ((0, float(run.data.params["synth.class_ratio.0"])),)
    for baseline in (r for r in runs if "gantune.baseline" in r.data.tags):
        assert "synth_accept_rate" not in baseline.data.metrics  # no synthetic image, nothing selected


def test_the_leaderboard_shows_the_acceptance_rate_and_the_per_class_ratio(uses_search):
    proc, _, _ = uses_search
    lines = proc.stdout.splitlines()
    header = next((line for line in lines if line.startswith("trial_id")), None)
    assert header is not None, proc.stdout[-3000:]
    assert "synth_accept_rate" in header and "synth.class_ratio.0" in header and "synth.pretrain_share" in header
