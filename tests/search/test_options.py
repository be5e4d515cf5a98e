"""SearchOptions: the one place of the run options' defaults; printed, logged on the parent run,
compared on --resume; the seed in every trial's config."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from gantune.search import resume, tracking
from gantune.search.cli import build_parser, main
from gantune.search.options import FLAGS, SearchOptions, default, field_help, redact
from gantune.search.space import load_space
from gantune.trainables.config import TrialConfig

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "spaces" / "demo.yaml"


def search_args(*argv: str):
    return build_parser(load=("search",)).parse_args(["search", str(DEMO), *argv])


def test_search_flags_take_their_defaults_and_help_from_the_dataclass():
    args = search_args()
    for f in fields(SearchOptions):
        assert hasattr(args, f.name), f"SearchOptions.{f.name} has no flag"
        if f.name not in ("experiment", "tracking_uri"):  # resolved by `gantune search`
            assert getattr(args, f.name) == f.default, f.name
    text = build_parser(load=("search",))._subparsers._group_actions[0].choices["search"].format_help()
    assert "of every trial's training" in field_help()["seed"] and "of every trial's training" in text
    assert search_args("--seed", "4", "--cpus-per-trial", "2", "--quiet").seed == 4
    assert FLAGS["max_failures"] == "--max-failures" and default("experiment") is None


def test_dry_run_prints_the_options_and_hides_passwords(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = main(["search", str(DEMO), "--dry-run", "--seed", "5", "--optuna-storage", "postgresql://u:s3cret@db/optuna"])
    out = capsys.readouterr().out
    assert code == 0 and "s3cret" not in out
    options = json.loads(out)["options"]
    assert options["seed"] == 5 and options["experiment"] == "demo"
    assert options["optuna_storage"] == "postgresql+psycopg2://u:***@db/optuna"
    assert redact("sqlite:///x.db") == "sqlite:///x.db"


def test_options_are_params_of_the_parent_run(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    options = SearchOptions(experiment="demo", tracking_uri=uri, seed=3, gpus_per_trial=0.5)
    experiment_id = tracking.ensure_experiment(client, "demo", uri)
    resolved = {**load_space(DEMO).resolved(), "options": options.to_dict()}
    run_id = tracking.start_parent_run(client, experiment_id, resolved)
    params = client.get_run(run_id).data.params
    assert params["options.seed"] == "3" and params["options.gpus_per_trial"] == "0.5"
    assert params["options.storage_path"] == "ray_results"


def resolved_with(**changes) -> dict:
    options = SearchOptions(experiment="demo", tracking_uri="sqlite:///m.db", **changes)
    return {**load_space(DEMO).resolved(), "options": options.to_dict()}


@pytest.mark.parametrize("key, value, flag", [("seed", 1, "--seed 0"), ("cpus_per_trial", 2.0, "--cpus-per-trial 1.0"),
                                              ("gpus_per_trial", 0.5, "--gpus-per-trial 0.0")])
def test_resume_refuses_another_seed_or_resource_naming_it(tmp_path, key, value, flag):
    before = resolved_with()
    assert resume.changed_keys(before, resolved_with(quiet=True, resume=True)) == []  # free to change
    assert resume.changed_keys(before, resolved_with(**{key: value})) == [f"options.{key}"]
    resume.write_record(
        str(tmp_path), resume.SearchRecord("demo", "1", "p", "demo-p", "sqlite:///m.db", before, "failed")
    )
    with pytest.raises(resume.ResumeError, match=f"options.{key} changed .* resume with {flag}"):
        resume.record_to_resume(str(tmp_path), "demo", resolved_with(**{key: value}), "sqlite:///m.db")


def test_resume_with_another_seed_exits_2_before_ray_starts(tmp_path, capsys, monkeypatch):
    from gantune.search import tuner

    monkeypatch.setattr(tuner, "init_ray", lambda *a, **k: pytest.fail("Ray started before the resume was refused"))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    storage = str(tmp_path / "ray_results")
    options = SearchOptions(experiment="demo", tracking_uri=uri, storage_path=storage)
    resolved = {**load_space(DEMO).resolved(), "options": options.to_dict()}
    resume.write_record(
        storage, resume.SearchRecord("demo", "1", "parent", "demo-parent", uri, resolved, "interrupted")
    )
    argv = ["search", str(DEMO), "--resume", "--seed", "1", "--storage-path", storage, "--tracking-uri", uri]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "options.seed changed since the search started; resume with --seed 0" in err


def test_trial_config_keeps_its_seed():
    cfg = TrialConfig.from_flat({"gan.steps": 7}, seed=11)
    flat = cfg.to_flat()
    assert flat["seed"] == 11  # what config/trial_config.json records
    assert TrialConfig.from_flat(flat) == cfg
