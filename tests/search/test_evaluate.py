"""`gantune evaluate` on tiny data: a hand-made finished search in a temporary MLflow store, the
three methods refitted and scored on the test split, the paired CI checked against scipy, and no
validation (early-stop) or test image ever reaching GAN training."""

import csv
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from scipy import stats

from gantune.search import evaluate as ev
from gantune.search.cli import main
from gantune.trainables.config import TrialConfig
from gantune.trainables.data.datasets import load_medmnist_npz
from gantune.trainables.gans import GANS
from gantune.trainables.gans.dcgan import fit_dcgan

TINY = {
    "data.folds": 3, "data.positive_class": 0,
    "gan.steps": 2, "gan.width": 16, "gan.latent_dim": 8, "gan.batch_size": 8,
    "classifier.steps": 4, "classifier.eval_every": 2, "classifier.width": 0.05, "classifier.batch_size": 16,
}


def image_ids(images) -> set:
    return {img.cpu().numpy().tobytes() for img in images}


@pytest.fixture(scope="module")
def tiny_npz(tmp_path_factory, breast_splits):
    """A MedMNIST-style file: 18 + 6 pool images per class, 10 test images per class."""
    out = tmp_path_factory.mktemp("data") / "tiny.npz"
    raw = np.load(Path(__file__).resolve().parents[2] / "data" / "breastmnist.npz")
    arrays = {}
    for split, n in (("train", 18), ("val", 6), ("test", 10)):
        labels = raw[f"{split}_labels"].reshape(-1)
        keep = np.concatenate([np.flatnonzero(labels == c)[:n] for c in (0, 1)])
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = raw[f"{split}_images"][keep], raw[f"{split}_labels"][keep]
    np.savez(out, **arrays)
    return out


def make_search(tmp_path, data_path, classic_strength=0.3, tag_best=True):
    """A finished search as `gantune search` leaves it: parent run, trial runs with their configs."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("tiny", artifact_location=(tmp_path / "art").as_uri())
    parent = client.create_run(exp, tags={"gantune.role": "search"}).info.run_id
    fixed = {**TINY, "data.path": str(data_path)}
    resolved = {"name": "tiny", "space_file": str(tmp_path / "space.yaml"), "fixed": fixed, "searched": {},
                "search": {"metric": "val_auc", "mode": "max", "baselines": ["real_only", "classic_aug"]}}
    client.log_dict(parent, resolved, "config/resolved_space.json")
    trials = {
        "best": ({"synth.ratio": 1.0, "gan.lr": 3e-4}, 0.9, None),
        "real": ({"synth.ratio": 0.0}, 0.8, "real_only"),
        "classic": ({"synth.ratio": 0.0, "augment.enabled": True, "augment.strength": classic_strength}, 0.85, "classic_aug"),
        "classic_worse": ({"synth.ratio": 0.0, "augment.enabled": True, "augment.strength": 0.9}, 0.5, "classic_aug"),
    }
    for trial_id, (params, auc, baseline) in trials.items():
        tags = {"gantune.role": "trial", "mlflow.parentRunId": parent, "gantune.trial_id": trial_id}
        if baseline:
            tags["gantune.baseline"] = baseline
        run = client.create_run(exp, tags=tags).info.run_id
        client.log_dict(run, TrialConfig.from_flat({**fixed, **params}).to_flat(), "config/trial_config.json")
        client.log_metric(run, "val_auc", auc)
        client.set_terminated(run)
    if tag_best:
        client.set_tag(parent, "gantune.best_trial_id", "best")
    client.set_terminated(parent)
    return uri, client, parent


def test_paired_ci_matches_scipy_ttest_rel():
    a, b = [0.91, 0.88, 0.93, 0.90], [0.89, 0.88, 0.90, 0.86]
    mean, low, high = ev.paired_ci(a, b)
    reference = stats.ttest_rel(a, b).confidence_interval(0.95)
    assert mean == pytest.approx(np.mean(np.subtract(a, b)))
    assert (low, high) == pytest.approx((reference.low, reference.high))
    d = np.subtract(a, b)  # by hand: mean +- t(0.975, n-1) * sd / sqrt(n)
    half = stats.t.ppf(0.975, 3) * math.sqrt(sum((x - d.mean()) ** 2 for x in d) / 3) / 2
    assert high - mean == pytest.approx(half)
    assert math.isnan(ev.paired_ci([0.9], [0.8])[1])


def test_method_configs_turn_off_synthesis_and_set_augmentation():
    best = TrialConfig.from_flat({"synth.ratio": 1.5, "augment.enabled": False, "gan.lr": 5e-4})
    configs = ev.method_configs(best, classic_strength=0.4)
    assert configs["best_config"] is best
    assert configs["real_only"].baseline_name() == "real_only"
    assert configs["classic_aug"].baseline_name() == "classic_aug"
    assert configs["classic_aug"].augment.strength == 0.4
    assert configs["real_only"].gan == best.gan == configs["classic_aug"].gan  # nothing else changes


def test_evaluate_end_to_end_table_run_and_no_leak(tmp_path, tiny_npz, monkeypatch):
    seen = []

    def spy(cfg, images, **kw):
        seen.append(image_ids(images))
        return fit_dcgan(cfg, images, **kw)

    monkeypatch.setitem(GANS, "dcgan", spy)
    uri, client, parent = make_search(tmp_path, tiny_npz)
    lines = []
    text, run_id = ev.evaluate(uri, "tiny", "test", seeds=2, progress=lines.append)

    # --- progress: one line per (method, seed) ---
    assert sum("seed" in line and "test auc" in line for line in lines) == 3 * 2
    # --- the table: three methods, mean +- sd, the paired CI against the better baseline ---
    for method in ev.METHODS:
        assert method in text
    assert "±" in text and "95% t confidence interval" in text

    # --- leakage: GANs saw exactly the refit's training images of their class, never test/early-stop ---
    data = load_medmnist_npz(tiny_npz)
    cfg = TrialConfig.from_flat({**TINY, "synth.ratio": 1.0})
    split = ev.refit_split(data, cfg)
    assert len(seen) == 2 * 2  # best_config only (the baselines make no synthetic image): 2 classes x 2 seeds
    forbidden = image_ids(data.test.images) | image_ids(split.val_view(data.pool).images)
    allowed = image_ids(split.train_view(data.pool).images)
    for images in seen:
        assert images <= allowed and not images & forbidden
    assert seen[0] | seen[1] == allowed

    # --- the evaluation run ---
    run = client.get_run(run_id)
    assert run.data.tags["gantune.role"] == "evaluation"
    assert run.data.tags["mlflow.parentRunId"] == parent
    assert run.data.params["source_trial_id"] == "best"
    assert run.data.params["seeds"] == "0,1" and run.data.params["split"] == "test"
    assert float(run.data.params["classic_aug_strength"]) == 0.3  # from the better classic_aug trial
    assert int(run.data.params["early_stop_images"]) == len(split.val_idx) == 16
    for method in ev.METHODS:
        for metric in ev.TABLE_METRICS:
            assert f"test_{method}_{metric}_mean" in run.data.metrics and f"test_{method}_{metric}_sd" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"evaluation.txt", "evaluation.csv", "evaluation_per_seed.csv", "early_stop_pool_indices.txt"} <= artifacts

    # --- the logged numbers against a plain recomputation from the per-seed table ---
    path = client.download_artifacts(run_id, "evaluation_per_seed.csv", str(tmp_path))
    per_seed = list(csv.DictReader(io.StringIO(Path(path).read_text())))
    auc = {m: [float(r["auc"]) for r in per_seed if r["method"] == m] for m in ev.METHODS}
    assert all(len(v) == 2 for v in auc.values())
    assert run.data.metrics["test_real_only_auc_mean"] == pytest.approx(np.mean(auc["real_only"]))
    assert run.data.metrics["test_real_only_auc_sd"] == pytest.approx(np.std(auc["real_only"], ddof=1))
    baseline = run.data.params["better_baseline"]
    assert baseline == max(ev.BASELINES, key=lambda b: np.mean(auc[b]))
    d = np.subtract(auc["best_config"], auc[baseline])
    assert run.data.metrics["paired_delta_auc"] == pytest.approx(d.mean())
    if d.std() > 0:
        reference = stats.ttest_rel(auc["best_config"], auc[baseline]).confidence_interval(0.95)
        assert run.data.metrics["paired_delta_auc_ci_low"] == pytest.approx(reference.low)
        assert run.data.metrics["paired_delta_auc_ci_high"] == pytest.approx(reference.high)


def test_without_best_tag_or_classic_baseline(tmp_path, tiny_npz):
    uri, client, _ = make_search(tmp_path, tiny_npz, tag_best=False)
    source = ev.find_source(client, "tiny")
    assert source.trial.data.tags["gantune.trial_id"] == "best"  # ranked by val_auc
    assert source.cfg.synth.ratio == 1.0


def test_cli_dry_run_and_errors(tmp_path, tiny_npz, capsys):
    uri, _, _ = make_search(tmp_path, tiny_npz)
    assert main(["evaluate", "--experiment", "tiny", "--tracking-uri", uri, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "best trial best" in out and json.loads(out[out.index("{"):])["classic_aug"]["augment.strength"] == 0.3
    assert main(["evaluate", "--experiment", "nope", "--tracking-uri", uri]) == 2
    assert "no MLflow experiment named 'nope'" in capsys.readouterr().err
    assert main(["evaluate", "--experiment", "tiny", "--tracking-uri", uri, "--data", str(tmp_path / "missing.npz")]) == 2
    assert "--data does not exist" in capsys.readouterr().err
