"""A real search end to end: local Ray cluster, a temporary SQLite MLflow store, --smoke-test,
two trials. Asserts the MLflow structure that users and `gantune promote` rely on."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


def run_smoke_search(workdir: Path, *extra: str) -> subprocess.CompletedProcess:
    """A smoke search in `workdir` with stdout and stderr piped (not a terminal), as in a CI log."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_LOGGING_LEVEL")}
    proc = subprocess.run(
        [sys.executable, "-m", "gantune.search.cli", "search", str(ROOT / "spaces" / "demo.yaml"),
         "--smoke-test", "--experiment", "e2e", *extra],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=540,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


@pytest.fixture(scope="module")
def smoke_search(tmp_path_factory):
    """The default output (live view, no --quiet), as a newcomer's first search prints it."""
    workdir = tmp_path_factory.mktemp("search")
    proc = run_smoke_search(workdir, "--num-samples", "2")
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    return proc, client, client.get_experiment_by_name("e2e")


ANSI = re.compile(r"\x1b\[")
LIBRARY_INFO = {
    "ray": re.compile(r"INFO \S+\.py:\d+ -- "),  # 2026-12-01 12:29:26,440	INFO worker.py:2038 -- Started ...
    "mlflow": re.compile(r"INFO (mlflow|alembic)\."),  # 2026/12/01 12:29:27 INFO mlflow.store.db.utils: ...
    "optuna": re.compile(r"^\[I \d{4}-\d\d-\d\d", re.M),  # [I 2026-12-01 12:29:32,562] A new study ...
}
CHECKPOINT_LINE = "Checkpoint successfully created"


def test_output_in_a_log_has_no_colour_codes_checkpoint_lines_or_library_info(smoke_search):
    proc, _, _ = smoke_search
    for stream in (proc.stdout, proc.stderr):
        assert not ANSI.search(stream), repr(stream[:2000])
        assert CHECKPOINT_LINE not in stream
        for library, pattern in LIBRARY_INFO.items():
            assert not pattern.search(stream), f"{library} INFO line: {pattern.search(stream).group(0)!r}"
        assert "(trainable pid=" not in stream  # trial processes' output stays in Ray's logs
    assert '"searched": {' not in proc.stdout  # the space as its summary, not the JSON
    # One vocabulary: the live view and the leaderboard say finished / stopped early, not Ray's words.
    assert "TERMINATED" not in proc.stdout and " finished" in proc.stdout


def test_verbose_brings_back_the_library_logs_and_the_whole_configuration(tmp_path):
    proc = run_smoke_search(tmp_path, "--num-samples", "1", "--verbose")
    out = proc.stdout + proc.stderr
    assert '"searched": {' in proc.stdout
    for library, pattern in LIBRARY_INFO.items():
        assert pattern.search(out), f"no {library} INFO line with --verbose"
    assert CHECKPOINT_LINE in out
    assert not ANSI.search(out)  # still a log: Ray's forwarded lines stay uncoloured


def artifact_paths(client, run_id, path=None):
    out = []
    for item in client.list_artifacts(run_id, path):
        out += artifact_paths(client, run_id, item.path) if item.is_dir else [item.path]
    return out


def test_prints_leaderboard_and_ui_command(smoke_search):
    proc, _, _ = smoke_search
    assert "Leaderboard (2 trials" in proc.stdout
    assert "delta_val_auc_vs_real_only" in proc.stdout and "val_auc_min_fold" in proc.stdout
    assert "/mlflow ui " in proc.stdout and "--backend-store-uri sqlite:///" in proc.stdout


def test_one_parent_run_with_trial_runs_nested(smoke_search):
    _, client, experiment = smoke_search
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("gantune.role") == "search"]
    trials = [r for r in runs if r.data.tags.get("gantune.role") == "trial"]
    assert len(parents) == 1 and len(trials) == 2
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert "best_val_auc" in parent.data.metrics
    assert {"leaderboard.csv", "leaderboard.txt", "config/resolved_space.json"} <= set(
        artifact_paths(client, parent.info.run_id)
    )
    ids = set()
    for run in trials:
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        # Finished or stopped early by ASHA: both end FINISHED, the outcome is the tag
        assert run.info.status == "FINISHED"
        assert run.data.tags["gantune.outcome"] in ("finished", "stopped early")
        ids.add(run.data.tags["gantune.trial_id"])
        assert set(run.data.params) == {"gan.lr", "gan.batch_size", "synth.ratio"}
        for name in ("auc", "accuracy", "sensitivity", "specificity", "precision", "f1"):
            assert 0 <= run.data.metrics[f"val_{name}"] <= 1
            # per-fold values: one metric fold_val_<name>, step = fold index
            history = client.get_metric_history(run.info.run_id, f"fold_val_{name}")
            assert 0 in {m.step for m in history}
            # the worst fold, as a plain min over the logged folds
            assert run.data.metrics[f"val_{name}_min_fold"] == pytest.approx(min(m.value for m in history))
    assert len(ids) == 2


def test_baseline_and_gan_trial_artifacts(smoke_search):
    _, client, experiment = smoke_search
    trials = client.search_runs([experiment.experiment_id], "tags.`gantune.role` = 'trial'")
    baseline = [r for r in trials if r.data.tags.get("gantune.baseline") == "real_only"]
    assert len(baseline) == 1 and float(baseline[0].data.params["synth.ratio"]) == 0.0
    gan_trial = next(r for r in trials if float(r.data.params["synth.ratio"]) > 0)
    paths = set(artifact_paths(client, gan_trial.info.run_id))
    assert {"plots/confusion_matrix.png", "plots/roc.png", "generator/MLmodel"} <= paths
    assert {"samples/class_0_malignant.png", "samples/class_1_normal_benign.png"} <= paths


def test_logged_generator_loads_and_generates(smoke_search):
    import mlflow.pyfunc
    import pandas as pd

    _, client, experiment = smoke_search
    trials = client.search_runs([experiment.experiment_id], "tags.`gantune.role` = 'trial'")
    gan_trial = next(r for r in trials if float(r.data.params["synth.ratio"]) > 0)
    mlflow.set_tracking_uri(client._tracking_client.tracking_uri)
    model = mlflow.pyfunc.load_model(f"runs:/{gan_trial.info.run_id}/generator")
    images = model.predict(pd.DataFrame({"label": [0, 1], "num": [3, 2]}))
    assert [i.shape for i in images] == [(3, 1, 28, 28), (2, 1, 28, 28)]
    assert model.metadata.get_input_schema().input_names() == ["label", "num", "seed"]
    with pytest.raises(Exception, match="num"):  # the signature names the missing column
        model.predict(pd.DataFrame({"label": [0]}))
