"""benchmarks/gpu_check.sh, the check a GPU node runs first: its CPU dry run passes here, with the
driver-side libraries blocked as a GPU node lacks them, and prints the JSON the GPU run prints."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # benchmarks/ is a folder of the repository, not of the package

from benchmarks import gpu_check  # noqa: E402

SECTIONS = {"gpu_check", "dry_run", "device", "worker_imports", "gpu_tests", "recipe_fold", "packing", "seconds", "ok"}


def script_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k != gpu_check.BLOCK_ENV}
    return {**env, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}


@pytest.mark.timeout(900)
def test_the_dry_run_checks_the_wiring_on_the_cpu_and_prints_the_gpu_run_s_json(tmp_path):
    out = tmp_path / "gpu_check.json"
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run", "--out", str(out)],
                          cwd=tmp_path, env=script_env(), capture_output=True, text=True, timeout=850)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    report = json.loads(done.stdout)  # stdout is the one JSON, also written to --out
    assert report == json.loads(out.read_text())
    assert set(report) == SECTIONS and report["dry_run"] is True and report["ok"] is True
    # Ray, MLflow, Optuna, SimpleITK and MONAI were blocked, yet every worker module imported from the checkout.
    assert report["device"]["driver_side_absent"] == dict.fromkeys(gpu_check.DRIVER_SIDE, True)
    imports = report["worker_imports"]
    assert imports["ok"] and set(imports["files"]) == set(gpu_check.WORKER_MODULES)
    assert imports["files"]["gantune.trainables.pipeline"] == "trainables/pipeline.py"
    tests = report["gpu_tests"]
    assert tests["passed"] == [] and tests["failed"] == {} and len(tests["skipped"]) == 5
    assert all(reason.startswith("needs CUDA") for reason in tests["skipped"].values())
    fold = report["recipe_fold"]
    assert fold["ran"] and fold["wall_s"] > 0 and 0.0 <= fold["val_auc"] <= 1.0
    per_gpu = report["packing"]["per_gpu"]
    assert set(per_gpu) == {"1", "2", "4", "8"}
    for k in ("1", "2"):
        assert per_gpu[k]["ran"] and per_gpu[k]["trials_per_gpu_hour"] > 0
    assert not per_gpu["8"]["ran"]


def test_the_dry_run_blocks_what_a_gpu_node_lacks():
    code = ("import os, benchmarks.gpu_check as c; os.environ[c.BLOCK_ENV] = '1'; c.block_if_asked()\n"
            "for m in c.DRIVER_SIDE:\n"
            "    try:\n        __import__(m)\n    except ImportError:\n        continue\n"
            "    raise SystemExit(m + ' imported')\n"
            "import gantune.trainables.pipeline")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=script_env(), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def test_the_gpu_budgets_are_the_ones_the_recipe_names():
    """The recipe's header says what to raise on a GPU, e.g. 'gan.steps (5000+)'."""
    header = "".join(line for line in gpu_check.SPACE.read_text().splitlines(keepends=True) if line.startswith("#"))
    header = re.sub(r"\s+#\s*", " ", header)
    named = {k: float(v) for k, v in re.findall(r"([a-z_]+\.[a-z_]+) \(([0-9.]+)\+?\)", header)}
    assert {k: named.get(k) for k in gpu_check.GPU_BUDGETS} == gpu_check.GPU_BUDGETS


def test_without_cuda_the_full_check_refuses_to_run_and_says_to_use_the_dry_run():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA machine runs the full check")
    with pytest.raises(SystemExit, match="--dry-run"):
        gpu_check.check(dry_run=False)
