"""`gantune evaluate` on tiny data: a hand-made finished search in a temporary MLflow store, the
four methods refitted and scored on the test split, every logged statistic recomputed from the
logged per-seed predictions with plain references (sklearn, scipy), the refit plan (official
splits, or the cross-validated step count with no early stop), the data-efficiency subsets, and no
early-stop or test image ever reaching GAN training."""

import csv
import io
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from gantune.search import evaluate as ev
from gantune.search import stats
from gantune.search.cli import main
from gantune.trainables.config import TrialConfig
from gantune.trainables.data.datasets import DataSplits, ImageDataset, load_medmnist_npz
from gantune.trainables.gans import GANS
from gantune.trainables.gans.dcgan import fit_dcgan
from mlflow.tracking import MlflowClient
from scipy import stats as sps
from sklearn.metrics import roc_auc_score

TINY = {
    "data.folds": 3, "data.positive_class": 0,
    "gan.steps": 2, "gan.width": 16, "gan.latent_dim": 8, "gan.batch_size": 8,
    "classifier.steps": 4, "classifier.eval_every": 2, "classifier.width": 0.05, "classifier.batch_size": 16,
}


def image_ids(images) -> set:
    return {img.cpu().numpy().tobytes() for img in images}


@pytest.fixture(scope="module")
def tiny_npz(tmp_path_factory, breast_splits):
    """A MedMNIST-style file: 18 train + 6 val images per class, 10 test images per class."""
    out = tmp_path_factory.mktemp("data") / "tiny.npz"
    raw = np.load(Path(__file__).resolve().parents[2] / "data" / "breastmnist.npz")
    arrays = {}
    for split, n in (("train", 18), ("val", 6), ("test", 10)):
        labels = raw[f"{split}_labels"].reshape(-1)
        keep = np.concatenate([np.flatnonzero(labels == c)[:n] for c in (0, 1)])
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = (
            raw[f"{split}_images"][keep],
            raw[f"{split}_labels"][keep],
        )
    np.savez(out, **arrays)
    return out


def make_search(tmp_path, data_path, classic_strength=0.3, tag_best=True, trivial=True):
    """A finished search as `gantune search` leaves it: parent run, trial runs with their configs."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("tiny", artifact_location=(tmp_path / "art").as_uri())
    parent = client.create_run(exp, tags={"gantune.role": "search"}).info.run_id
    fixed = {**TINY, "data.path": str(data_path)}
    resolved = {
        "name": "tiny",
        "space_file": str(tmp_path / "space.yaml"),
        "fixed": fixed,
        "searched": {},
        "search": {"metric": "val_auc", "mode": "max", "baselines": ["real_only", "classic_aug", "trivial_aug"]},
    }
    client.log_dict(parent, resolved, "config/resolved_space.json")
    trials = {
        "best": ({"synth.ratio": 1.0, "gan.lr": 3e-4}, 0.9, None),
        "real": ({"synth.ratio": 0.0}, 0.8, "real_only"),
        "classic": (
            {"synth.ratio": 0.0, "augment.enabled": True, "augment.strength": classic_strength},
            0.85,
            "classic_aug",
        ),
        "classic_worse": ({"synth.ratio": 0.0, "augment.enabled": True, "augment.strength": 0.9}, 0.5, "classic_aug"),
    }
    if trivial:
        trials["trivial"] = ({"synth.ratio": 0.0, "augment.enabled": True, "augment.policy": "trivial",
                              "augment.strength": 0.6}, 0.84, "trivial_aug")
    # Stopped by the scheduler after one lucky fold: the best mean, never the pick.
    trials["stopped"] = ({"synth.ratio": 1.5}, 0.99, None)
    for trial_id, (params, auc, baseline) in trials.items():
        tags = {"gantune.role": "trial", "mlflow.parentRunId": parent, "gantune.trial_id": trial_id}
        if baseline:
            tags["gantune.baseline"] = baseline
        run = client.create_run(exp, tags=tags).info.run_id
        client.log_dict(run, TrialConfig.from_flat({**fixed, **params}).to_flat(), "config/trial_config.json")
        client.log_metric(run, "val_auc", auc)
        done = 1 if trial_id == "stopped" else TINY["data.folds"]
        client.log_metric(run, "folds_done", done)
        for i in range(done):
            client.log_metric(run, "fold_val_auc", auc, step=i)
        client.log_metric(run, "val_clf_best_step", 3.4)
        if not baseline:  # as a search logs it: what promote registers, so what evaluate refits by default
            client.log_text(run, "flavors: {}\n", "generator/MLmodel")
        client.set_terminated(run)
    if tag_best:
        client.set_tag(parent, "gantune.best_trial_id", "best")
    client.set_terminated(parent)
    return uri, client, parent


def test_method_configs_turn_off_synthesis_and_set_augmentation():
    best = TrialConfig.from_flat({"synth.ratio": 1.5, "augment.enabled": False, "gan.lr": 5e-4})
    classic = ev.baseline_augment(
        best, "classic", TrialConfig.from_flat({"augment.enabled": True, "augment.strength": 0.4})
    )
    trivial = ev.baseline_augment(best, "trivial", None)
    configs = ev.method_configs(best, {"classic_aug": classic, "trivial_aug": trivial})
    assert list(configs) == list(ev.METHODS)
    assert configs["best_config"] is best
    assert configs["real_only"].baseline_name() == "real_only"
    assert configs["classic_aug"].baseline_name() == "classic_aug" and configs["classic_aug"].augment.strength == 0.4
    assert configs["trivial_aug"].augment.policy == "trivial" and configs["trivial_aug"].augment.active
    for cfg in configs.values():  # same classifier and step budget, nothing else changes
        assert cfg.classifier == best.classifier and cfg.gan == best.gan


def splits(n_pool=30, n_test=12, official_val=None):
    g = torch.Generator().manual_seed(0)
    pool = ImageDataset(torch.rand(n_pool, 1, 8, 8, generator=g), torch.arange(n_pool) % 2, ("a", "b"))
    test = ImageDataset(torch.rand(n_test, 1, 8, 8, generator=g), torch.arange(n_test) % 2, ("a", "b"))
    return DataSplits(pool, test, official_val=official_val)


def test_refit_plan_official_val_or_cross_validated_steps():
    cfg = TrialConfig.from_flat({**TINY, "classifier.steps": 40})
    trial = SimpleNamespace(data=SimpleNamespace(metrics={"val_clf_best_step": 12.6}))
    official = ev.refit_plan(splits(official_val=np.arange(24, 30)), trial, cfg)
    assert official.kind == "official_val" and official.steps == 40
    np.testing.assert_array_equal(official.train_idx, np.arange(24))
    np.testing.assert_array_equal(official.early_stop_idx, np.arange(24, 30))
    whole = ev.refit_plan(splits(), trial, cfg)
    assert whole.kind == "cv_steps" and whole.early_stop_idx is None and whole.steps == 13
    np.testing.assert_array_equal(whole.train_idx, np.arange(30))
    fallback = ev.refit_plan(splits(), SimpleNamespace(data=SimpleNamespace(metrics={})), cfg)
    assert fallback.steps == 40 and "classifier.steps" in fallback.reason


def test_cv_steps_refits_train_the_chosen_steps_on_the_whole_pool_without_early_stop(monkeypatch):
    seen = []

    def fake_fit(cfg, train, early_stop, device, seed, *cache, gan_seed=None):
        seen.append((cfg.classifier.steps, len(train), early_stop, seed, gan_seed))
        return None, None, None

    def fake_score(model, data, positive):
        p = torch.full((len(data), 2), 0.5).numpy()
        return {m: 0.5 for m in ev.METRIC_NAMES}, data.labels.numpy(), p

    monkeypatch.setattr(ev, "fit_pipeline", fake_fit)
    monkeypatch.setattr(ev, "score", fake_score)
    cfg = TrialConfig.from_flat({**TINY, "classifier.steps": 40})
    data = splits()
    plan = ev.refit_plan(data, SimpleNamespace(data=SimpleNamespace(metrics={"val_clf_best_step": 7.0})), cfg)
    configs = ev.method_configs(cfg, {b: ev.baseline_augment(cfg, p, None) for b, p in ev.AUGMENTED_BASELINES.items()})
    refits = ev.evaluate_methods(configs, data, plan, [0, 1], torch.device("cpu"), (0.5, 1.0), lambda _: None)
    assert len(seen) == 2 * 4 * 2
    assert {s[0] for s in seen} == {7} and all(s[2] is None for s in seen)
    assert refits.sizes == {0.5: 16, 1.0: 30} and {s[1] for s in seen} == {16, 30}
    assert [s[3] for s in seen[:2]] == [0, 1]
    assert {s[4] for s in seen} == {0}  # one draw: every seed shares draw 0's generator


def test_draws_pair_methods_and_share_one_generator_per_draw(monkeypatch):
    seen = []

    def fake_fit(cfg, train, early_stop, device, seed, *cache, gan_seed=None):
        seen.append((cfg.synth.ratio > 0, tuple(train.labels.tolist()), seed, gan_seed, train.images.sum().item()))
        return None, None, None

    def fake_score(model, data, positive):
        return {m: 0.5 for m in ev.METRIC_NAMES}, data.labels.numpy(), torch.full((len(data), 2), 0.5).numpy()

    monkeypatch.setattr(ev, "fit_pipeline", fake_fit)
    monkeypatch.setattr(ev, "score", fake_score)
    cfg = TrialConfig.from_flat({**TINY, "synth.ratio": 1.0})
    data = splits()
    plan = ev.refit_plan(data, SimpleNamespace(data=SimpleNamespace(metrics={})), cfg)
    configs = ev.method_configs(cfg, {b: ev.baseline_augment(cfg, p, None) for b, p in ev.AUGMENTED_BASELINES.items()})
    refits = ev.evaluate_methods(configs, data, plan, [0, 1, 2], torch.device("cpu"), (0.5, 1.0), lambda _: None,
                                 draws=2)
    assert [u.label for u in refits.units] == ["d0s0", "d0s1", "d0s2", "d1s0", "d1s1", "d1s2"]
    # fraction 0.5: draws x methods x seeds; fraction 1: draw 0 in full, then only best_config (the
    # baselines of draw 1 would train on the same images with the same seeds: reused, not refitted)
    assert len(seen) == 2 * 4 * 3 + (4 * 3 + 3)
    full = refits.by_fraction[1.0]
    assert full["real_only"].metrics[3] is full["real_only"].metrics[0]  # d1s0 reuses d0s0
    assert all(len(refits.by_fraction[f][m].metrics) == 6 for f in (0.5, 1.0) for m in ev.METHODS)
    half = [s for s in seen if len(s[1]) == 16]
    # Within a draw every method and seed trains on the same images; the two draws differ.
    images_by_draw = {(s[3], s[4]) for s in half}
    assert len(images_by_draw) == 2 and {d for d, _ in images_by_draw} == {0, 1}
    assert [(s[2], s[3]) for s in half[:3]] == [(0, 0), (1, 0), (2, 0)]  # seeds vary, the generator seed is the draw


def test_train_subsets_are_stratified_nested_within_a_draw_and_fixed():
    from gantune.search.study import draw_subset

    labels = np.r_[np.zeros(40, int), np.ones(20, int)]
    idx = np.arange(60)
    quarter, half = draw_subset(idx, labels, 0.25, 0, 0), draw_subset(idx, labels, 0.5, 0, 0)
    assert np.bincount(labels[quarter]).tolist() == [10, 5] and np.bincount(labels[half]).tolist() == [20, 10]
    assert set(quarter) <= set(half)
    np.testing.assert_array_equal(quarter, draw_subset(idx, labels, 0.25, 0, 0))
    assert draw_subset(idx, labels, 1.0, 0, 3) is idx
    other = draw_subset(idx, labels, 0.25, 0, 1)
    assert np.bincount(labels[other]).tolist() == [10, 5] and set(other) != set(quarter)


def test_parse_fractions():
    assert ev.parse_fractions("0.5,0.25") == (0.25, 0.5, 1.0)
    with pytest.raises(Exception, match="must be in"):
        ev.parse_fractions("0,1")
    with pytest.raises(Exception, match="comma-separated"):
        ev.parse_fractions("half")


def test_evaluate_end_to_end_table_run_statistics_and_no_leak(tmp_path, tiny_npz, monkeypatch):
    seen = []

    def spy(cfg, images, **kw):
        seen.append(image_ids(images))
        return fit_dcgan(cfg, images, **kw)

    monkeypatch.setitem(GANS, "dcgan", spy)
    uri, client, parent = make_search(tmp_path, tiny_npz)
    lines = []
    text, run_id = ev.evaluate(uri, "tiny", "test", seeds=3, progress=lines.append)

    # --- progress: one line per (method, seed) ---
    assert sum("seed" in line and "test auc" in line for line in lines) == 4 * 3
    assert any(
        "official splits: train on the 36 official train images, early-stop on the 12 official val images" in line
        for line in lines
    )
    # --- the table: four methods, mean +- sd, the intervals against the strongest baseline ---
    for method in ev.METHODS:
        assert method in text
    assert "±" in text and "95% t interval" in text and "paired bootstrap" in text and "DeLong" in text

    # --- leakage: GANs saw exactly the official train images of their class, never val (early stop) or test ---
    data = load_medmnist_npz(tiny_npz)
    assert len(seen) == 2 * 3  # best_config only (the baselines make no synthetic image): 2 classes x 3 seeds
    train = data.pool.subset(np.setdiff1d(np.arange(len(data.pool)), data.official_val))
    forbidden = image_ids(data.test.images) | image_ids(data.pool.subset(data.official_val).images)
    allowed = image_ids(train.images)
    for images in seen:
        assert images <= allowed and not images & forbidden
    assert seen[0] | seen[1] == allowed

    # --- the evaluation run ---
    run = client.get_run(run_id)
    assert run.data.tags["gantune.role"] == "evaluation"
    assert run.data.tags["mlflow.parentRunId"] == parent
    assert run.data.params["source_trial_id"] == "best"
    assert run.data.params["seeds"] == "0,1,2" and run.data.params["split"] == "test"
    assert run.data.params["refit"] == "official_val" and int(run.data.params["early_stop_images"]) == 12
    assert run.data.params["classic_aug_augment_from"] == "trial classic"  # the better classic_aug trial
    assert run.data.params["trivial_aug_augment_from"] == "trial trivial"
    classic = json.loads(Path(client.download_artifacts(run_id, "config/classic_aug.json", str(tmp_path))).read_text())
    trivial = json.loads(Path(client.download_artifacts(run_id, "config/trivial_aug.json", str(tmp_path))).read_text())
    assert (
        classic["augment.strength"] == 0.3
        and trivial["augment.policy"] == "trivial"
        and trivial["augment.strength"] == 0.6
    )
    for method in ev.METHODS:
        for metric in ev.TABLE_METRICS:
            assert (
                f"test_{method}_{metric}_mean" in run.data.metrics and f"test_{method}_{metric}_sd" in run.data.metrics
            )
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"evaluation.txt", "evaluation.csv", "evaluation_per_seed.csv", "early_stop_pool_indices.txt",
            "predictions.npz"} <= artifacts

    # --- the logged numbers against plain recomputations from the per-seed table and predictions ---
    path = client.download_artifacts(run_id, "evaluation_per_seed.csv", str(tmp_path))
    per_seed = list(csv.DictReader(io.StringIO(Path(path).read_text())))
    auc = {m: [float(r["auc"]) for r in per_seed if r["method"] == m] for m in ev.METHODS}
    assert all(len(v) == 3 for v in auc.values())
    m = run.data.metrics
    assert m["test_real_only_auc_mean"] == pytest.approx(np.mean(auc["real_only"]))
    assert m["test_real_only_auc_sd"] == pytest.approx(np.std(auc["real_only"], ddof=1))
    baseline = run.data.params["better_baseline"]
    assert baseline == max(ev.BASELINES, key=lambda b: np.mean(auc[b]))
    d = np.subtract(auc["best_config"], auc[baseline])
    assert m["paired_delta_auc"] == pytest.approx(d.mean())
    if d.std() > 0:
        reference = sps.ttest_rel(auc["best_config"], auc[baseline]).confidence_interval(0.95)
        assert m["paired_delta_auc_ci_low"] == pytest.approx(reference.low)
        assert m["paired_delta_auc_ci_high"] == pytest.approx(reference.high)

    with np.load(client.download_artifacts(run_id, "predictions.npz", str(tmp_path))) as npz:
        labels, best, base = npz["labels"], npz["proba_best_config_f1"], npz[f"proba_{baseline}_f1"]
    assert best.shape == (3, 20, 2)
    y = labels == 0  # data.positive_class 0
    for s in range(3):  # the per-seed predictions are the ones the table scored
        assert roc_auc_score(y, best[s][:, 0]) == pytest.approx(auc["best_config"][s])
    ens_best, ens_base = best.mean(axis=0)[:, 0], base.mean(axis=0)[:, 0]
    assert m["test_best_config_ensemble_auc"] == pytest.approx(roc_auc_score(y, ens_best))
    assert m["ensemble_delta_auc"] == pytest.approx(roc_auc_score(y, ens_best) - roc_auc_score(y, ens_base))
    assert m["delong_p"] == pytest.approx(stats.delong(y, ens_best, ens_base).p)
    boot = stats.paired_bootstrap(
        labels,
        best.mean(axis=0),
        base.mean(axis=0),
        lambda yy, p: stats.auc(yy == 0, p[:, 0]),
        ev.BOOTSTRAP_REPLICATES,
        ev.BOOTSTRAP_SEED,
    )
    assert (m["paired_delta_auc_bootstrap_ci_low"], m["paired_delta_auc_bootstrap_ci_high"]) == pytest.approx(
        (boot.low, boot.high)
    )
    # The study's interval at fraction 1 (one draw: seeds, then test images), recomputed from the predictions.
    hier = stats.hierarchical_bootstrap(labels, best[None], base[None], lambda yy, p: stats.auc(yy == 0, p[:, 0]),
                                        ev.BOOTSTRAP_REPLICATES, ev.BOOTSTRAP_SEED)
    assert (m["frac_1_delta_auc"], m["frac_1_delta_auc_lo"], m["frac_1_delta_auc_hi"]) == pytest.approx(
        (hier.delta, hier.low, hier.high))
    assert m["frac_1_delta_auc"] == pytest.approx(d.mean())  # the mean paired AUC difference
    assert m["mde_auc"] == pytest.approx(stats.min_detectable_auc_delta(0.85, 10, 10))  # best baseline val_auc
    assert any(line.startswith("power: the test split (10 positive, 10 negative)") for line in lines)
    target = stats.specificity_at(y, base.mean(axis=0).argmax(axis=1) == 0)
    assert m["baseline_spec"] == pytest.approx(target)
    assert m["test_best_config_sens_at_spec"] == pytest.approx(stats.sensitivity_at_specificity(y, ens_best, target))


def test_train_fractions_refit_on_subsets_and_plot(tmp_path, tiny_npz, monkeypatch):
    sizes = []

    def spy(cfg, images, **kw):
        sizes.append(len(images))
        return fit_dcgan(cfg, images, **kw)

    monkeypatch.setitem(GANS, "dcgan", spy)
    uri, client, _ = make_search(tmp_path, tiny_npz, trivial=False)
    text, run_id = ev.evaluate(uri, "tiny", "test", seeds=1, progress=lambda _: None, fractions=(0.5,))
    assert sorted(sizes) == [9, 9, 18, 18]  # the GAN of each class sees only the subset
    assert "data efficiency" in text
    run = client.get_run(run_id)
    assert run.data.params["train_fractions"] == "0.5,1"
    for f in ("0.5", "1"):
        assert {f"frac_{f}_delta_auc", f"frac_{f}_delta_auc_lo", f"frac_{f}_delta_auc_hi"} <= set(run.data.metrics)
    assert run.data.metrics["frac_0.5_train_images"] == 18 and run.data.metrics["frac_1_train_images"] == 36
    assert run.data.params["trivial_aug_augment_from"].startswith("default trivial policy")
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"data_efficiency.png", "data_efficiency.csv"} <= artifacts
    rows = list(
        csv.DictReader(
            io.StringIO(Path(client.download_artifacts(run_id, "data_efficiency.csv", str(tmp_path))).read_text())
        )
    )
    assert [int(r["train_images"]) for r in rows] == [18, 36]
    assert all(f"auc_{m}" in rows[0] for m in ev.METHODS) and rows[0]["baseline"] in ev.BASELINES
    history = client.get_metric_history(run_id, "efficiency_best_config_auc")
    assert sorted(h.step for h in history) == [18, 36]
    png = Path(client.download_artifacts(run_id, "data_efficiency.png", str(tmp_path))).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_without_best_tag_or_classic_baseline(tmp_path, tiny_npz):
    _, client, _ = make_search(tmp_path, tiny_npz, tag_best=False)
    source = ev.find_source(client, "tiny")
    assert source.trial.data.tags["gantune.trial_id"] == "best"  # ranked by val_auc among complete trials
    assert source.cfg.synth.ratio == 1.0
    assert ev.find_source(client, "tiny", ev.BEST_GAN).trial.data.tags["gantune.trial_id"] == "best"


def test_cli_dry_run_and_errors(tmp_path, tiny_npz, capsys):
    uri, _, _ = make_search(tmp_path, tiny_npz)
    assert main(["evaluate", "--experiment", "tiny", "--tracking-uri", uri, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "Evaluating trial best (run " in out and "the trial `gantune promote` would register" in out
    assert "official splits" in out
    assert json.loads(out[out.index("{"):])["classic_aug"]["augment.strength"] == 0.3
    assert main(["evaluate", "--experiment", "nope", "--tracking-uri", uri]) == 2
    assert "no MLflow experiment named 'nope'" in capsys.readouterr().err
    assert (
        main(["evaluate", "--experiment", "tiny", "--tracking-uri", uri, "--data", str(tmp_path / "missing.npz")]) == 2
    )
    err = capsys.readouterr().err
    assert "--data" in err and "no such file or folder" in err
    with pytest.raises(SystemExit) as exit_:
        main(["evaluate", "--experiment", "tiny", "--tracking-uri", uri, "--train-fraction", "2"])
    assert exit_.value.code == 2 and "--train-fraction: every fraction must be in (0, 1]" in capsys.readouterr().err


def test_multiclass_evaluation_bootstraps_macro_auc_and_skips_binary_only_statistics():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 8)

    def runs(signal):
        out = ev.MethodRuns()
        for _ in range(3):
            p = rng.dirichlet(np.ones(3), len(labels)) + signal * np.eye(3)[labels]
            out.proba.append(p / p.sum(1, keepdims=True))
            out.metrics.append({m: float(rng.uniform()) for m in ev.METRIC_NAMES})
        return out

    evaluation = ev.compare({"best_config": runs(1.0), "real_only": runs(0.0), "classic_aug": runs(0.0),
                             "trivial_aug": runs(0.0)}, labels, [0, 1, 2], positive=1)
    metrics = evaluation.metrics()
    ens = {m: np.mean(evaluation.runs[m].proba, axis=0) for m in ev.METHODS}
    macro = {m: roc_auc_score(labels, p, multi_class="ovr") for m, p in ens.items()}
    assert metrics["test_best_config_ensemble_auc"] == pytest.approx(macro["best_config"])
    assert metrics["ensemble_delta_auc"] == pytest.approx(macro["best_config"] - macro[evaluation.baseline])
    assert metrics["paired_delta_auc_bootstrap_ci_low"] > 0  # a clear multiclass gain
    assert "delong_p" not in metrics and "baseline_spec" not in metrics
    assert "DeLong" not in ev.format_table(evaluation, "test", metrics)
