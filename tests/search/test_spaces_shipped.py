"""Every space file the project ships loads, resolves its baselines and dry-runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gantune.search.cli import main
from gantune.search.space import load_space

SPACES = sorted((Path(__file__).resolve().parents[2] / "spaces").glob("*.yaml"))


def test_the_shipped_spaces_are_all_here():
    assert {p.stem for p in SPACES} >= {"demo", "dcgan", "egan", "daegan", "daegan_simgan", "retinamnist"}


@pytest.mark.parametrize("path", SPACES, ids=lambda p: p.stem)
def test_space_file_loads_and_dry_runs(path, tmp_path, capsys, monkeypatch):
    space = load_space(path)
    points = space.baseline_points()
    assert len(points) == len(space.search.baselines)
    for name, point in zip(space.search.baselines, points):
        assert space.baseline_of(point) == name, f"{path.name}: baseline {name} resolves to {space.baseline_of(point)}"
    monkeypatch.chdir(tmp_path)  # a dry run must write nothing
    assert main(["search", str(path), "--dry-run"]) == 0
    resolved = json.loads(capsys.readouterr().out)
    assert resolved["name"] == space.name and resolved["searched"].keys() == space.domains.keys()
    assert list(tmp_path.iterdir()) == []
