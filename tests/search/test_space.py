"""Space files are validated before Ray starts, with errors naming the file and the key."""

import json
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from gantune.search.cli import main
from gantune.search.space import SMOKE_TEST, SpaceError, load_space

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "spaces" / "demo.yaml"


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


def test_demo_space_resolves_fixed_and_searched_keys():
    space = load_space(DEMO)
    assert set(space.domains) == {"gan.lr", "gan.batch_size", "synth.ratio"}
    dists = space.optuna_space()
    assert isinstance(dists["gan.lr"], optuna.distributions.FloatDistribution) and dists["gan.lr"].log
    assert dists["gan.batch_size"].choices == (32, 64)
    # The real-only baseline is the first point evaluated.
    assert space.baseline_points()[0]["synth.ratio"] == 0.0


@pytest.mark.parametrize(
    "text, message",
    [
        ("gan: {lrr: 0.1}", "unknown key 'gan.lrr'"),
        ("gann: {lr: 0.1}", "unknown section(s) ['gann']"),
        ("gan: {lr: {loguniform: [0, 1]}}", "'gan.lr' loguniform needs low > 0"),
        ("gan: {lr: {uniform: [2, 1]}}", "'gan.lr' uniform needs low < high"),
        ("gan: {steps: many}", "'gan.steps' must be int"),
        ("gan: {lr: {gaussian: [0, 1]}}", "'gan.lr' must be a value or one of"),
        ("synth: {ratio: {uniform: [1, 3]}}", "lists 'real_only', but it needs 'synth.ratio' searched with 0"),
        ("search: {mode: maximum}", "'search.mode' must be max or min"),
        ("search: {num_sample: 3}", "unknown key 'search.num_sample'"),
        ("gan: [1, 2", "not valid YAML"),
    ],
)
def test_bad_space_names_file_and_key(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(SpaceError) as err:
        load_space(path)
    assert str(err.value).startswith(str(path))
    assert message in str(err.value)


def test_overrides_fix_a_searched_key_and_smoke_shrinks_budgets():
    space = load_space(DEMO).with_overrides({**SMOKE_TEST, "synth.ratio": 1.0, "search.baselines": []})
    assert "synth.ratio" not in space.domains and space.fixed["synth.ratio"] == 1.0
    assert space.fixed["gan.steps"] == SMOKE_TEST["gan.steps"] < load_space(DEMO).fixed["gan.steps"]


def test_a_baseline_the_space_cannot_express_is_an_error(tmp_path):
    with pytest.raises(SpaceError, match="'search.baselines' lists 'real_only'"):
        load_space(DEMO).with_overrides({"synth.ratio": 1.0})
    path = write(tmp_path, "synth: {ratio: {uniform: [0, 2]}}\nsearch: {baselines: [real_only, classic_aug]}")
    with pytest.raises(SpaceError, match="lists 'classic_aug', but it needs"):
        load_space(path)


def test_both_baselines_are_evaluated_first_in_the_full_space():
    space = load_space(ROOT / "spaces" / "daegan_simgan.yaml")
    real_only, classic = space.baseline_points()
    assert real_only["synth.ratio"] == classic["synth.ratio"] == 0.0
    assert real_only["augment.strength"] == 0.0 < classic["augment.strength"]
    assert space.baseline_of(real_only) == "real_only" and space.baseline_of(classic) == "classic_aug"
    assert space.baseline_of({**classic, "synth.ratio": 1.0}) is None


def test_dry_run_prints_the_resolved_config_and_starts_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["search", str(DEMO), "--dry-run", "--set", "gan.steps=7", "--num-samples", "3"]) == 0
    resolved = json.loads(capsys.readouterr().out)
    assert resolved["fixed"]["gan.steps"] == 7
    assert resolved["search"]["num_samples"] == 3
    options = resolved["options"]  # SearchOptions, printed with the space
    assert options["tracking_uri"].startswith("sqlite:///") and options["tracking_uri"].endswith("mlflow.db")
    assert options["seed"] == 0 and options["cpus_per_trial"] == 1.0 and options["experiment"] == "demo"
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "ray_results").exists()


def test_bad_space_file_exits_2_with_a_clear_message(tmp_path):
    path = write(tmp_path, "classifier: {optimiser: sgd}")
    proc = subprocess.run(
        [sys.executable, "-m", "gantune.search.cli", "search", str(path), "--dry-run"],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert f"gantune: error: {path}: unknown key 'classifier.optimiser'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bad_override_names_the_key(tmp_path, capsys):
    assert main(["search", str(DEMO), "--dry-run", "--set", "gan.nope=1"]) == 2
    assert "unknown key 'gan.nope'" in capsys.readouterr().err
