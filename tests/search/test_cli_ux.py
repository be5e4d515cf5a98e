"""A newcomer's CLI: the short space summary a search prints, and --dry-run refusing what the
real run would refuse first (a misspelt data path)."""

from __future__ import annotations

from pathlib import Path

from gantune.search import cli
from gantune.search.space import load_space

DEMO = Path(__file__).resolve().parents[2] / "spaces" / "demo.yaml"


def test_the_summary_names_the_search_data_metric_and_every_searched_key_in_four_lines():
    space = load_space(DEMO)
    text = cli.space_summary({**space.resolved(), "options": {}})
    lines = text.splitlines()
    assert len(lines) == 4
    assert "'demo'" in lines[0] and "6 trials" in lines[0] and "val_auc (max)" in lines[0]
    assert "data/breastmnist.npz, 3 folds" in lines[1] and "real_only" in lines[1]
    for key in space.domains:
        assert key in lines[2]
    assert "--dry-run or --verbose" in lines[3]


def test_dry_run_refuses_a_misspelt_data_path_naming_the_space_file_and_key(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = cli.main(["search", str(DEMO), "--dry-run", "--set", "data.path=data/breastmnsit.npz"])
    err = capsys.readouterr().err
    assert code == cli.EXIT_USAGE
    assert str(DEMO) in err and "'data.path' 'data/breastmnsit.npz' does not exist" in err
    assert cli.main(["search", str(DEMO), "--dry-run"]) == 0  # the shipped path resolves
