"""Defect 13's second half: every path built from a name stays inside its root, also where the
name did not come through validation (a crafted search record, a direct API call): the resume
record and Tune directory under --storage-path, an experiment's artifact folder, the sample grids
of a trial run. Validation at the source is tested in the bad-input battery."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from mlflow.tracking import MlflowClient

from gantune.search import resume, tracking
from gantune.search.resume import ResumeError, SearchRecord
from gantune.trainables.config import TrialConfig
from gantune.trainables.paths import PathEscapeError, inside
from gantune.trainables.tracking import TrialRun

ESCAPES = ["../outside", "../../outside", "a/../../outside", "/etc/outside", ".."]


@pytest.mark.parametrize("root", ["/srv/store", "relative/store", "s3://bucket/store", "file:///srv/store"])
@pytest.mark.parametrize("name", ESCAPES)
def test_a_name_leading_out_of_its_root_is_refused(root, name):
    with pytest.raises(PathEscapeError, match="leads outside"):
        inside(root, name)


@pytest.mark.parametrize("root", ["/srv/store", "s3://bucket/store", "file:///srv/store"])
def test_names_inside_the_root_are_joined_unchanged(root):
    assert inside(root, "exp.gantune.json") == f"{root}/exp.gantune.json"
    assert inside(root, "a..b", "c") == f"{root}/a..b/c"  # '..' inside a name is just a name


def files_under(path: Path) -> set[Path]:
    return {p for p in path.rglob("*") if p.is_file()}


@pytest.mark.parametrize("name", ESCAPES[:3])
def test_the_resume_record_of_a_crafted_experiment_name_is_never_written_outside(tmp_path, name):
    storage = tmp_path / "deep" / "storage"
    record = SearchRecord(experiment=name, experiment_id="1", parent_run_id="p" * 32, tune_name="t",
                          tracking_uri="sqlite:///x.db", resolved={})
    with pytest.raises(ResumeError, match=f"experiment '{name}'.*leads outside"):
        resume.write_record(str(storage), record)
    with pytest.raises(ResumeError, match="leads outside"):
        resume.read_records(str(storage), name)
    assert files_under(tmp_path) == set()


def test_a_crafted_record_s_tune_directory_outside_the_storage_path_is_refused(tmp_path):
    storage = tmp_path / "storage"
    resolved = {"fixed": {}, "searched": {}, "search": {}}
    good = SearchRecord(experiment="exp", experiment_id="1", parent_run_id="p" * 32, tune_name="exp-pppppppp",
                        tracking_uri="sqlite:///x.db", resolved=resolved)
    resume.write_record(str(storage), good)
    assert resume.record_to_resume(str(storage), "exp", resolved, "sqlite:///x.db") == good
    (path,) = (storage / "exp.gantune").iterdir()  # the search's own record
    path.write_text(json.dumps(asdict(replace(good, tune_name="../../elsewhere"))))
    with pytest.raises(ResumeError, match=r"its tune_name: '\.\./\.\./elsewhere' leads outside"):
        resume.record_to_resume(str(storage), "exp", resolved, "sqlite:///x.db")
    (crafted,) = resume.read_records(str(storage), "exp")
    with pytest.raises(ResumeError, match="tune_name"):
        resume.tune_path(str(storage), crafted)
    with pytest.raises(ResumeError, match="tune_name"):
        resume.write_record(str(storage), crafted)
    assert files_under(tmp_path) == {path}


def test_an_experiment_s_artifact_folder_stays_under_the_store_s(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    with pytest.raises(PathEscapeError, match="leads outside"):
        tracking.ensure_experiment(client, "../../escape", uri)
    assert client.get_experiment_by_name("../../escape") is None  # refused before it was created
    experiment = client.get_experiment(tracking.ensure_experiment(client, "fine", uri))
    assert experiment.artifact_location == (tmp_path / "mlartifacts" / "fine").as_uri()


class Grid:
    def sample(self, n, seed):
        return torch.zeros(n, 1, 8, 8)


def test_a_class_name_cannot_lead_a_sample_grid_out_of_its_folder(tmp_path):
    run = TrialRun(SimpleNamespace(log_artifacts=lambda *a, **k: None), "r", TrialConfig(), ("ok", "../../../evil"))
    synthetic = SimpleNamespace(gans={0: Grid(), 1: Grid()}, refiners={})
    with pytest.raises(PathEscapeError, match="evil"):
        run._log_samples(synthetic, str(tmp_path / "run"))
    assert {p.name for p in files_under(tmp_path)} == {"class_0_ok.png"}  # nothing outside samples/
