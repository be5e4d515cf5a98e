"""A command run by `ray job submit --working-dir .` runs in Ray's temporary copy of that folder
(<session>/runtime_resources/working_dir_files/_ray_pkg_<hash>, ux.md step 3b). A local tracking
store or storage path there would be lost with the Ray session, so gantune refuses it before any
work and names the flags to pass; stores outside the copy are accepted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_bad_inputs import run

from gantune.search.guards import job_copy_error, ray_job_copy

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "spaces" / "demo.yaml"
NPZ = ROOT / "data" / "breastmnist.npz"


@pytest.fixture
def job_copy(tmp_path, monkeypatch) -> Path:
    """The folder a job's entrypoint runs in, laid out as Ray lays it out, with the job's env."""
    copy = tmp_path / "session_2026" / "runtime_resources" / "working_dir_files" / "_ray_pkg_0123abcd"
    (copy / "spaces").mkdir(parents=True)
    monkeypatch.chdir(copy)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps({"runtime_env": {"working_dir": "gcs://_ray_pkg.zip"}}))
    monkeypatch.setenv("GANTUNE_CACHE_DIR", str(tmp_path / "cache"))
    return copy


def search(*flags: str) -> list[str]:
    return ["search", str(DEMO), "--data", str(NPZ), "--dry-run", *flags]


def test_the_copy_is_found_from_anywhere_inside_it(job_copy):
    assert ray_job_copy() == job_copy.resolve()
    assert ray_job_copy(job_copy / "spaces") == job_copy.resolve()
    assert ray_job_copy(job_copy.parent.parent) is None  # the session folder itself is no copy


def test_a_job_with_the_default_tracking_store_is_refused(job_copy, tmp_path):
    """Failure mode 1: no --tracking-uri, so mlflow.db would be written into the copy."""
    outcome = run(search("--storage-path", str(tmp_path / "shared" / "ray_results")))
    assert outcome.code == 2 and "Traceback" not in outcome.output, outcome.output
    for said in ("Ray's temporary copy", "the MLflow store sqlite:///", "--tracking-uri http://", "deleted with"):
        assert said in outcome.output, outcome.output
    assert "--storage-path" not in outcome.output.split("gantune runs inside")[1].split("would be written")[0]
    assert not (job_copy / "mlflow.db").exists()


def test_a_job_with_the_default_storage_path_is_refused(job_copy, tmp_path):
    """Failure mode 2: no --storage-path, so ray_results/ (Tune's state, the generator cache,
    the resume record) would be written into the copy."""
    outcome = run(search("--tracking-uri", f"sqlite:///{tmp_path / 'shared' / 'mlflow.db'}"))
    assert outcome.code == 2 and "Traceback" not in outcome.output, outcome.output
    for said in ("--storage-path ray_results", "s3://BUCKET/PREFIX", "--resume auto"):
        assert said in outcome.output, outcome.output
    assert "the MLflow store" not in outcome.output
    assert not (job_copy / "ray_results").exists()


def test_a_job_with_both_defaults_names_both(job_copy):
    outcome = run(search())
    assert outcome.code == 2 and "the MLflow store" in outcome.output and "--storage-path ray_results" in outcome.output


def test_a_job_writing_outside_its_copy_is_accepted(job_copy, tmp_path):
    (tmp_path / "shared").mkdir()
    outcome = run(search("--tracking-uri", f"sqlite:///{tmp_path / 'shared' / 'mlflow.db'}",
                         "--storage-path", str(tmp_path / "shared" / "ray_results")))
    assert outcome.code == 0, outcome.output


def test_other_commands_are_refused_too(job_copy):
    """evaluate would log its run and cache its GANs in the copy; promote would register there."""
    evaluate = run(["evaluate", "--experiment", "demo", "--dry-run"])
    assert evaluate.code == 2 and "the MLflow store" in evaluate.output and "--storage-path" in evaluate.output
    promote = run(["promote", "--experiment", "demo"])
    assert promote.code == 2 and "the MLflow store" in promote.output


def test_outside_a_job_the_defaults_stand(tmp_path):
    assert job_copy_error(f"sqlite:///{tmp_path / 'mlflow.db'}", "ray_results", cwd=tmp_path) is None
