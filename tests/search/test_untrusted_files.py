"""Files gantune reads that someone else may have written (a registered model, a Tune checkpoint
folder, a dataset, the preprocessing cache) carry a pickle payload: every reader must refuse it
without running it. The payload makes a directory when unpickled, so "refused" is checked by its
absence, not only by the exception. Also: a crafted MLmodel must not point `generate` outside the
downloaded model."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from gantune.search import cli
from gantune.search.generate import sample_classes
from gantune.trainables.data import cache
from gantune.trainables.data.datasets import DatasetError, read_medmnist_npz
from gantune.trainables.gans import load_generators, load_refiners
from gantune.trainables.generator_model import GeneratorModel
from gantune.trainables.trial import FOLDS_JSON, FOLDS_NPZ, load_fold_results


class Payload:
    """Unpickling this calls os.mkdir(marker): the stand-in for arbitrary code."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def payload_checkpoint(path: Path, marker: Path) -> Path:
    """A file shaped like `generator_checkpoint`'s, with the payload where tensors would be."""
    bomb = Payload(marker)
    torch.save({"class_names": ["a", "b"], "gans": {"0": bomb}, "refiners": {"0": bomb}, "filter_threshold": 0.0}, path)
    return path


CHECKPOINT_READERS = {
    "load_generators": load_generators,
    "load_refiners": load_refiners,
    "generate.sample_classes": lambda p: sample_classes(Path(p), 1, 0),
    "pyfunc GeneratorModel.load_context": lambda p: GeneratorModel().load_context(
        SimpleNamespace(artifacts={"checkpoint": p})
    ),
}


@pytest.mark.parametrize("reader", CHECKPOINT_READERS.values(), ids=CHECKPOINT_READERS.keys())
def test_generator_checkpoint_readers_refuse_a_pickle_payload(tmp_path, reader):
    marker = tmp_path / "code-ran"
    path = payload_checkpoint(tmp_path / "checkpoint.pt", marker)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        reader(str(path))
    assert not marker.exists()


def test_preprocessing_cache_treats_a_pickle_payload_as_a_miss(tmp_path):
    marker = tmp_path / "code-ran"
    key = "0" * 64
    path = cache.entry_path(key, tmp_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"images": Payload(marker)}, path)
    assert cache.load(key, tmp_path) is None
    assert not marker.exists()


def test_fold_checkpoint_refuses_a_pickled_array(tmp_path):
    """A restored trial reads its finished folds from Tune's checkpoint folder (possibly on shared
    or s3 storage)."""
    marker = tmp_path / "code-ran"
    fold = {"fold": 0, "metrics": {"auc": 0.5}, "synthetic_counts": {}, "gen_metrics": {}}
    (tmp_path / FOLDS_JSON).write_text(json.dumps({"folds": [fold]}))
    np.savez(tmp_path / FOLDS_NPZ, labels_0=np.array([Payload(marker)], dtype=object), proba_0=np.zeros(1))
    with pytest.raises(ValueError, match="allow_pickle=False"):
        load_fold_results(str(tmp_path))
    assert not marker.exists()


def test_dataset_npz_refuses_a_pickled_array(tmp_path):
    marker = tmp_path / "code-ran"
    arrays = {f"{s}_{k}": np.zeros((2, 1), np.uint8) for s in ("train", "val", "test") for k in ("images", "labels")}
    arrays["train_images"] = np.array([Payload(marker)], dtype=object)
    path = tmp_path / "bomb.npz"
    np.savez(path, **arrays)
    with pytest.raises(DatasetError, match=str(path)):
        read_medmnist_npz(path)
    assert not marker.exists()


# --- `gantune generate` on a crafted model logged to a real (SQLite) MLflow store ---


def log_model(tmp_path: Path, checkpoint_path: str, files: dict[str, Path]) -> tuple[str, str]:
    """A run whose `generator` artifact is an MLmodel pointing at `checkpoint_path`; returns
    (tracking URI, runs:/ URI)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("crafted", artifact_location=str(tmp_path / "art"))).info.run_id
    model = tmp_path / "generator"
    (model / "artifacts").mkdir(parents=True)
    mlmodel = {"flavors": {"python_function": {"artifacts": {"checkpoint": {"path": checkpoint_path, "uri": "x"}}}}}
    (model / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    for name, src in files.items():
        (model / name).write_bytes(src.read_bytes())
    client.log_artifacts(run_id, str(model), "generator")
    return uri, f"runs:/{run_id}/generator"


def run_generate(model_uri: str, tracking_uri: str, out: Path, capsys) -> tuple[int, str]:
    code = cli.main(["generate", model_uri, "--num", "1", "--out", str(out), "--tracking-uri", tracking_uri])
    return code, capsys.readouterr().err


def test_generate_refuses_a_model_whose_checkpoint_is_a_pickle_payload(tmp_path, capsys):
    marker = tmp_path / "code-ran"
    bomb = payload_checkpoint(tmp_path / "bomb.pt", marker)
    uri, model_uri = log_model(tmp_path, "artifacts/checkpoint.pt", {"artifacts/checkpoint.pt": bomb})
    code, err = run_generate(model_uri, uri, tmp_path / "out", capsys)
    assert code == cli.EXIT_USAGE
    assert "holds pickled Python objects" in err and model_uri in err and "Traceback" not in err
    assert not marker.exists()


@pytest.mark.parametrize("style", ["dotdot", "absolute"])
def test_generate_does_not_follow_a_checkpoint_path_outside_the_model(tmp_path, capsys, style):
    # Outside the model: a file the old code would have read (a payload, so reading it shows).
    outside = payload_checkpoint(tmp_path / "outside.pt", tmp_path / "code-ran")
    crafted = "../" * 40 + str(outside).lstrip("/") if style == "dotdot" else str(outside)
    uri, model_uri = log_model(tmp_path, crafted, {})
    code, err = run_generate(model_uri, uri, tmp_path / "out", capsys)
    assert code == cli.EXIT_USAGE
    assert "points outside the downloaded model" in err and "Traceback" not in err
