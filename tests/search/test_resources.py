"""A trial no node can ever run is refused before the search (Ray itself would wait forever)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gantune.search.resources import AUTOSCALING_ENV, node_types, trial_unfit, unfit_reason

ROOT = Path(__file__).resolve().parents[2]
CPU_NODE = {"CPU": 2.0, "memory": 1e9}
GPU_NODE = {"CPU": 8.0, "GPU": 4.0}


@pytest.mark.parametrize(
    "nodes, types, cpus, gpus, fits",
    [
        ([CPU_NODE], {}, 1, 0, True),
        ([CPU_NODE], {}, 1, 5, False),
        ([CPU_NODE], {}, 4, 0, False),
        ([CPU_NODE, GPU_NODE], {}, 1, 4, True),
        ([CPU_NODE, GPU_NODE], {}, 1, 5, False),  # 4 + 4 GPUs on two nodes still cannot hold 5 in one trial
        ([CPU_NODE], {"gpu-worker": {"CPU": 16, "GPU": 8}}, 2, 5, True),
        ([CPU_NODE], {"gpu-worker": {"CPU": 16, "GPU": 2}}, 2, 5, False),
        ([CPU_NODE], {"auto-detected": None}, 2, 5, True),  # a type without declared resources may fit
        ([], {}, 1, 0, False),
    ],
)
def test_a_trial_fits_when_one_node_or_node_type_holds_it(nodes, types, cpus, gpus, fits):
    reason = unfit_reason(nodes, types, cpus, gpus)
    assert (reason is None) == fits
    if not fits:
        assert f"--gpus-per-trial {gpus:g}" in reason and AUTOSCALING_ENV in reason


def test_the_refusal_says_what_exists():
    reason = unfit_reason([CPU_NODE, GPU_NODE], {"gpu-worker": {"CPU": 16, "GPU": 2}}, 1, 5)
    assert "2 CPU, 0 GPU" in reason and "8 CPU, 4 GPU" in reason and "gpu-worker (16 CPU, 2 GPU)" in reason


def test_node_types_from_the_cluster_launchers_bootstrap_config(tmp_path):
    config = {
        "head_node_type": "head",
        "available_node_types": {
            "head": {"resources": {"CPU": 4}, "max_workers": 0},
            "gpu": {"resources": {"CPU": 8, "GPU": 1}, "max_workers": 3},
            "never": {"resources": {"CPU": 64, "GPU": 8}, "max_workers": 0},
            "detected": {"node_config": {"InstanceType": "g5.xlarge"}},
        },
    }
    path = tmp_path / "ray_bootstrap_config.yaml"
    path.write_text(yaml.safe_dump(config))
    assert node_types(path) == {"head": {"CPU": 4}, "gpu": {"CPU": 8, "GPU": 1}, "detected": None}
    assert node_types(tmp_path / "missing.yaml") == {}


def test_the_autoscaling_override_skips_the_check():
    # Without Ray started: the override must return before asking Ray anything.
    assert trial_unfit(1, 99, environ={AUTOSCALING_ENV: "1"}) is None


@pytest.mark.e2e
@pytest.mark.timeout(600)
def test_search_with_more_gpus_per_trial_than_exist_is_refused_before_it_starts(tmp_path):
    """It used to hang: Ray waits forever behind its "ignore if autoscaling" warning."""
    if node_types():
        pytest.skip("this machine is a cluster launcher's head node: its node types decide")
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS", AUTOSCALING_ENV)}
    env.update(RAY_TMPDIR=str(tmp_path), OMP_NUM_THREADS="1")
    db = tmp_path / "mlflow.db"
    out = subprocess.run(
        [str(Path(sys.executable).with_name("gantune")), "search", "spaces/demo.yaml", "--smoke-test",
         "--num-samples", "1",
         "--gpus-per-trial", "5", "--tracking-uri", f"sqlite:///{db}", "--storage-path", str(tmp_path / "ray")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=500,
    )  # fmt: skip
    assert out.returncode == 2, out.stderr[-3000:]
    assert "--gpus-per-trial 5" in out.stderr and "0 GPU" in out.stderr and "Traceback" not in out.stderr
    if db.exists():  # refused before the parent run: nothing left RUNNING
        from mlflow import MlflowClient

        client = MlflowClient(f"sqlite:///{db}")
        assert not client.search_runs([e.experiment_id for e in client.search_experiments()])
