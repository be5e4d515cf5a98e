"""An unwritable --storage-path or artifact store, at the start or mid-search: a clear error, no
run left RUNNING, the parent run FAILED with the reason as a tag, the search record resumable."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from gantune.search import resume, tracking, tuner
from gantune.search.lease import stop_renewing
from gantune.search.options import SearchOptions
from gantune.search.resume import StorageError
from gantune.search.space import load_space
from gantune.search.tracking import FAILURE_TAG
from gantune.search.tuner import SearchFailed, open_search, run_search
from gantune.trainables.config import TrialConfig
from gantune.trainables.tracking import TrialRun

ROOT = Path(__file__).resolve().parents[2]
SPACE = load_space(ROOT / "spaces" / "demo.yaml")


def store(tmp_path: Path) -> tuple[str, MlflowClient]:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    return uri, MlflowClient(uri)


def all_runs(client: MlflowClient) -> list:
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


def block(path: Path) -> Path:
    """Make `path` a regular file, so nothing can be created under it."""
    if path.is_dir():
        shutil.rmtree(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("not a folder\n")
    return path


def options(tmp_path: Path, uri: str, storage: Path | None = None, name: str = "s") -> SearchOptions:
    return SearchOptions(experiment=name, tracking_uri=uri, storage_path=str(storage or tmp_path / "ray_results"))


def test_storage_path_probe_refuses_a_file_and_leaves_nothing_in_a_folder(tmp_path):
    blocked = block(tmp_path / "storage")
    with pytest.raises(StorageError, match=f"--storage-path {blocked}: cannot write there"):
        resume.check_writable(str(blocked))
    resume.check_writable(str(tmp_path / "new" / "storage"))
    assert list((tmp_path / "new" / "storage").iterdir()) == []


def test_unwritable_storage_path_is_refused_before_the_parent_run(tmp_path):
    uri, client = store(tmp_path)
    with pytest.raises(StorageError, match="--storage-path"):
        open_search(client, SPACE.resolved(), options(tmp_path, uri, block(tmp_path / "storage")), None)
    assert all_runs(client) == []


def test_unwritable_artifact_store_at_start_leaves_a_failed_parent_with_the_reason(tmp_path):
    uri, client = store(tmp_path)
    block(tmp_path / "mlartifacts")  # where a sqlite store's experiments keep their artifacts
    with pytest.raises(SearchFailed, match="could not start: (NotADirectoryError|FileExistsError)"):
        open_search(client, SPACE.resolved(), options(tmp_path, uri), None)
    (parent,) = all_runs(client)
    assert parent.info.status == "FAILED"
    assert "mlartifacts" in parent.data.tags[FAILURE_TAG]


def test_a_search_failing_mid_way_closes_its_parent_and_stays_resumable(tmp_path, monkeypatch, breast_splits):
    """The artifact store went away while Tune ran (here: Tune itself raises what it would)."""
    uri, client = store(tmp_path)
    opts = options(tmp_path, uri)

    class LostStore:
        def fit(self):
            raise NotADirectoryError(20, "Not a directory", str(tmp_path / "mlartifacts" / "1"))

    monkeypatch.setattr(tuner, "init_ray", lambda *a, **k: None)
    monkeypatch.setattr(tuner, "make_tuner", lambda *a, **k: LostStore())
    with pytest.raises(SearchFailed, match="the search stopped: NotADirectoryError") as err:
        run_search(SPACE, breast_splits, opts)
    assert "--resume" in str(err.value)
    (parent,) = all_runs(client)
    assert parent.info.status == "FAILED" and "Not a directory" in parent.data.tags[FAILURE_TAG]
    (record,) = resume.read_records(opts.storage_path, opts.experiment)
    assert record.status == "failed" and "Not a directory" in record.reason
    resolved = {**SPACE.resolved(), "options": opts.to_dict()}
    assert (
        resume.record_to_resume(opts.storage_path, opts.experiment, resolved, uri).parent_run_id == parent.info.run_id
    )


def test_a_leaderboard_that_cannot_be_written_still_ends_the_parent(tmp_path):
    uri, client = store(tmp_path)
    exp = tracking.ensure_experiment(client, "lb", uri)
    parent = tracking.start_parent_run(client, exp, SPACE.resolved())
    block(tmp_path / "mlartifacts" / "lb")
    with pytest.raises(OSError):
        tracking.finish_parent_run(client, parent, [], "val_auc", "", "FINISHED")
    run = client.get_run(parent)
    assert run.info.status == "FAILED" and run.data.tags[FAILURE_TAG].startswith("cannot write the leaderboard")


def test_a_failed_trial_keeps_its_reason_when_the_artifact_store_is_gone(tmp_path):
    """TrialRun.fail wrote failure.txt first: when that failed too, the run stayed RUNNING."""
    uri, client = store(tmp_path)
    exp = tracking.ensure_experiment(client, "t", uri)
    run_id = client.create_run(exp).info.run_id
    block(tmp_path / "mlartifacts" / "t")
    try:
        raise ValueError("the real reason")
    except ValueError as exc:
        TrialRun(client, run_id, TrialConfig(), ("a", "b")).fail(exc)
    run = client.get_run(run_id)
    assert run.info.status == "FAILED" and run.data.tags["gantune.failure_reason"] == "ValueError: the real reason"


@pytest.mark.e2e
@pytest.mark.timeout(600)
@pytest.mark.parametrize("blocked", ["mlartifacts", "ray_results"])
def test_search_command_on_an_unwritable_store_fails_clearly(tmp_path, blocked):
    block(tmp_path / blocked)
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
    env.update(RAY_TMPDIR=str(tmp_path), OMP_NUM_THREADS="1")
    uri, client = store(tmp_path)
    out = subprocess.run(
        [str(Path(sys.executable).with_name("gantune")), "search", "spaces/demo.yaml", "--smoke-test",
         "--num-samples", "1",
         "--tracking-uri", uri, "--storage-path", str(tmp_path / "ray_results"), "--quiet"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=500,
    )  # fmt: skip
    assert out.returncode in (1, 2) and "Traceback" not in out.stderr, out.stderr[-3000:]
    assert str(tmp_path / blocked) in out.stderr
    assert all(r.info.status == "FAILED" for r in all_runs(client))


def test_a_new_search_over_a_search_that_never_ended_says_how_to_continue_it(tmp_path, capsys):
    uri, client = store(tmp_path)
    opts = options(tmp_path, uri)
    killed = open_search(client, SPACE.resolved(), opts, None)  # its record stays 'running': a killed driver...
    running = open_search(client, SPACE.resolved(), opts, None)
    assert f"({running.parent_run_id} " not in capsys.readouterr().err
    stop_renewing(killed.lease.token)  # ...whose lease no one renews (search/lease.py)
    second = open_search(client, SPACE.resolved(), opts, None)
    err = capsys.readouterr().err
    assert killed.parent_run_id in err and "RUNNING" in err and "--resume" in err
    assert f"search of 's' (parent run {running.parent_run_id} (running" in err and "is running;" in err
    resume.mark(opts.storage_path, running, "finished")
    assert second.parent_run_id not in err  # the new search itself is not an earlier one
    for record in (killed, second):  # each search has its own record: none replaced another
        ids = [r.parent_run_id for r in resume.read_records(opts.storage_path, opts.experiment)]
        assert ids.count(record.parent_run_id) == 1
        resume.mark(opts.storage_path, record, "finished")
    open_search(client, SPACE.resolved(), opts, None)
    assert "warning" not in capsys.readouterr().err


def test_a_failure_reason_is_the_error_raised_not_the_word_traceback():
    """Tune's TuneError carries a whole traceback as its text: the tag and the message name the
    error at its end, not 'Traceback (most recent call last):'."""
    from ray.tune.error import TuneError

    from gantune.search.tracking import failure_text

    wrapped = TuneError("Traceback (most recent call last):\n  File \"x.py\", line 1, in f\n    g()\n\n"
                        "optuna.exceptions.UpdateFinishedTrialError: Trial#0 has already finished\n")
    raised = "optuna.exceptions.UpdateFinishedTrialError: Trial#0 has already finished"
    assert failure_text(wrapped) == f"TuneError: {raised}"
    assert failure_text(OSError("disk full\nmore")) == "OSError: disk full"
    assert failure_text(ValueError("")) == "ValueError: "
