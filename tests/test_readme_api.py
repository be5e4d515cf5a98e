"""The README's Python API example, run exactly as written (the code block under "## Python API")
in a fresh interpreter, in a folder of its own with the repository's spaces/ and data/."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


def readme_example() -> str:
    section = ROOT.joinpath("README.md").read_text().split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_example_runs_and_its_results_hold_what_it_prints(tmp_path):
    for name in ("spaces", "data"):
        (tmp_path / name).symlink_to(ROOT / name)
    # What the example prints is checked from its results, returned as one repr line at the end.
    code = readme_example() + (
        "\nprint('RESULTS', repr((found.experiment, found.best_trial_id, sorted(found.best_config), "
        "len(found.leaderboard), promoted.promoted, promoted.model_uri, images.counts, "
        "str(images.metadata_path), sorted(tested.methods), tested.run_id is not None)))\n"
    )
    ray_tmp = tempfile.mkdtemp(prefix="gtapi", dir="/tmp")  # short: Ray's unix socket paths
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
    env.update({"RAY_TMPDIR": ray_tmp, "OMP_NUM_THREADS": "1"})
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=840)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    results = eval(proc.stdout.split("RESULTS ", 1)[1])  # noqa: S307 - our own repr of plain values
    experiment, best, config, trials, promoted, model_uri, counts, metadata, methods, logged = results
    assert experiment == "api" and best and trials == 2
    assert config == ["gan.batch_size", "gan.lr", "synth.ratio"]
    assert promoted and model_uri == "models:/api-generator@champion"
    assert counts == {"malignant": 4, "normal_benign": 4}
    assert Path(metadata) == tmp_path / "synthetic-api" / "metadata.json"
    assert {"best_config", "real_only"} <= set(methods) and logged
    assert "/#/experiments/" in proc.stdout and (tmp_path / "mlflow.db").exists()
    print(proc.stdout)  # shown with -s
