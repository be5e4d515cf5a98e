"""Every GAN family, and the SimGAN refiner, dry-runs with the data-efficient options set (hinge,
LeCam, conditional ...), and a combination without meaning is refused at the space check with
exit 2 and the key named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from gantune.search.cli import main

ROOT = Path(__file__).resolve().parents[2]
MODERN = {"conditional": True, "lecam": 0.3, "spectral_norm": True, "diffaugment": "translation",
          "ada_target": 0.6, "ema": 0.99}


def space(tmp_path: Path, gan: dict, **sections) -> Path:
    path = tmp_path / "space.yaml"
    body = {"data": {"path": str(ROOT / "data" / "breastmnist.npz"), "folds": 3},
            "gan": {"steps": 10, **gan}, "synth": {"ratio": {"uniform": [0.0, 2.0]}}, **sections}
    path.write_text(yaml.safe_dump(body))
    return path


def dry_run(path: Path, capsys) -> tuple[int, str]:
    code = main(["search", str(path), "--dry-run"])
    out = capsys.readouterr()
    return code, out.out + out.err


@pytest.mark.parametrize("gan,refiner", [
    ({"family": "egan", "loss": "hinge", "mutations": "minimax,hinge", **MODERN}, None),
    ({"family": "daegan", **MODERN}, None),
    ({"family": "dcgan", "loss": "hinge", **MODERN}, {"loss": "hinge", "lecam": 0.3, "spectral_norm": True,
                                                      "diffaugment": "translation", "ada_target": 0.6, "ema": 0.99}),
    ({"family": "daegan", **MODERN}, {"loss": "hinge", "lecam": 0.3}),
], ids=["egan", "daegan", "dcgan+simgan", "daegan+simgan"])
def test_every_family_dry_runs_with_the_data_efficient_options(tmp_path, monkeypatch, capsys, gan, refiner):
    monkeypatch.chdir(tmp_path)
    extra = {"refiner": refiner, "synth": {"ratio": {"uniform": [0.0, 2.0]}, "refiner": "simgan"}} if refiner else {}
    code, output = dry_run(space(tmp_path, gan, **extra), capsys)
    assert code == 0, output
    fixed = json.loads(output)["fixed"]
    for key, value in {**{f"gan.{k}": v for k, v in gan.items()},
                       **{f"refiner.{k}": v for k, v in (refiner or {}).items()}}.items():
        assert fixed[key] == value


@pytest.mark.parametrize("gan,refiner,named", [
    ({"family": "daegan", "loss": "hinge"}, None, ["'gan.loss' 'hinge' has no meaning for gan.family 'daegan'"]),
    ({"family": "egan", "ada_target": 0.6}, None, ["'gan.ada_target'", "'gan.diffaugment'"]),
    ({"family": "egan"}, {"ada_target": 0.6}, ["'refiner.ada_target'", "'refiner.diffaugment'"]),
    ({"family": "egan"}, {"loss": "wgan"}, ["'refiner.loss' must be one of"]),
    ({"family": "egan"}, {"lecam": -1}, ["'refiner.lecam' must be >= 0"]),
])
def test_meaningless_combinations_exit_2_naming_the_key(tmp_path, monkeypatch, capsys, gan, refiner, named):
    monkeypatch.chdir(tmp_path)
    extra = {"refiner": refiner, "synth": {"ratio": {"uniform": [0.0, 2.0]}, "refiner": "simgan"}} if refiner else {}
    code, output = dry_run(space(tmp_path, gan, **extra), capsys)
    assert code == 2, output
    for name in named:
        assert name in output
    assert list(tmp_path.iterdir()) == [tmp_path / "space.yaml"]  # refused before any work


@pytest.mark.parametrize("name", ["egan_research", "daegan_simgan_research"])
def test_research_spaces_search_the_papers_hyperparameters_with_modern_training(name):
    from gantune.search.space import load_space

    loaded = load_space(str(ROOT / "spaces" / f"{name}.yaml"))
    assert {"gan.gamma", "gan.lr", "synth.ratio"} <= loaded.domains.keys()
    if name.startswith("daegan"):
        assert {"gan.alpha", "refiner.lambda_reg"} <= loaded.domains.keys()
        assert loaded.fixed["refiner.loss"] == "hinge" and loaded.fixed["refiner.lecam"] > 0
    assert loaded.fixed["gan.conditional"] and loaded.fixed["gan.lecam"] > 0 and loaded.fixed["gan.ada_target"] > 0
    assert loaded.fixed["synth.gen_metrics"] is True
