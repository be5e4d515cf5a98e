"""The generator cache in real searches: trials that share a GAN configuration train it once,
with the same fold metrics as a search without the cache; the parent run sums the counts."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

# The GAN part fixed, the ratio searched: every GAN trial needs the same GANs.
SHARED_GAN = ["--set", "gan.lr=0.0002", "--set", "gan.batch_size=32", "--set", "search.max_concurrent=1"]


def search(workdir: Path, experiment: str, *extra: str) -> MlflowClient:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
    proc = subprocess.run(
        [sys.executable, "-m", "gantune.search.cli", "search", str(ROOT / "spaces" / "demo.yaml"), "--smoke-test",
         "--num-samples", "3", "--experiment", experiment, "--quiet", *SHARED_GAN, *extra],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=800,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "reused from the generator cache" in proc.stdout
    return MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")


def gan_trials(client, name):
    experiment = client.get_experiment_by_name(name)
    runs = client.search_runs([experiment.experiment_id], "tags.`gantune.role` = 'trial'")
    return sorted((r for r in runs if float(r.data.params["synth.ratio"]) > 0), key=lambda r: r.info.start_time)


def parent(client, name):
    experiment = client.get_experiment_by_name(name)
    return client.search_runs([experiment.experiment_id], "tags.`gantune.role` = 'search'")[0]


@pytest.fixture(scope="module")
def searches(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("gan-cache")
    client = search(workdir, "cached")
    search(workdir, "uncached", "--no-gan-cache")
    return workdir, client


def test_the_second_trial_reuses_the_first_trials_gans_with_identical_fold_metrics(searches):
    workdir, client = searches
    cached, uncached = gan_trials(client, "cached"), gan_trials(client, "uncached")
    assert len(cached) == 2 and len(uncached) == 2
    first, second = cached
    assert (
        first.data.metrics["gan_cache_misses"] == 4 and first.data.metrics["gan_cache_hits"] == 0
    )  # 2 folds x 2 classes
    assert second.data.metrics["gan_cache_hits"] > 0 and second.data.metrics["gan_train_seconds"] == 0
    assert all(r.data.metrics["gan_cache_hits"] == 0 for r in uncached)
    assert (
        not (workdir / "ray_results" / "gan_cache").exists()
        or len(list((workdir / "ray_results" / "gan_cache").rglob("*.gan"))) == 4
    )
    # Same sampler seed, same proposals: compare trials by their ratio.
    by_ratio = {r.data.params["synth.ratio"]: r for r in uncached}
    for run in cached:
        twin = by_ratio[run.data.params["synth.ratio"]]
        folds = [k for k in run.data.metrics if k.startswith("fold") and "_val_" in k]
        assert folds and all(run.data.metrics[k] == twin.data.metrics[k] for k in folds)


def test_the_parent_run_sums_the_cache_counts(searches):
    _, client = searches
    cached = parent(client, "cached").data.metrics
    trials = gan_trials(client, "cached")
    assert cached["gan_cache_hits"] == sum(r.data.metrics["gan_cache_hits"] for r in trials) > 0
    assert cached["gan_cache_misses"] == 4
    assert parent(client, "uncached").data.metrics["gan_cache_hits"] == 0
