"""`gantune promote` and `gantune generate` against a real SQLite MLflow store whose search and
trial runs are built here (tiny real generators logged exactly as trials log them), so which
trial must win, and why, is known in advance."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from gantune.search import cli
from gantune.search.promote import PromoteError, promote
from gantune.trainables.config import TrialConfig
from gantune.trainables.data.datasets import load_medmnist_npz
from gantune.trainables.gans import GANConfig, RefinerConfig, fit_dcgan, fit_refiner
from gantune.trainables.tracking import TrialRun

CLASS_NAMES = ("malignant", "normal_benign")
FOLD_SPREAD = (-0.02, -0.01, 0.0, 0.01, 0.02)
pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def tiny_gans(small_pool):
    """Two 28 px DCGANs (a few steps) and one SimGAN refiner for class 1."""
    cfg = GANConfig(latent_dim=8, width=8, steps=2, batch_size=8, log_every=1)
    cpu = torch.device("cpu")
    gans = {c: fit_dcgan(cfg, small_pool.of_class(c)[:16], seed=c, device=cpu) for c in (0, 1)}
    rcfg = RefinerConfig(steps=1, pretrain_r_steps=1, pretrain_d_steps=1, batch_size=4, width=4)
    fake = gans[1].sample(8, seed=0)
    refiner = fit_refiner(rcfg, fake, small_pool.of_class(1)[:8], seed=0, device=cpu)
    return gans, {1: refiner}


def make_trial(client, experiment_id, parent_id, trial_id, auc, *, status="FINISHED", baseline=False,
               generator=None, tmp_path=None, cfg=TrialConfig()):
    tags = {"mlflow.parentRunId": parent_id, "gantune.role": "trial", "gantune.trial_id": trial_id}
    if baseline:
        tags["gantune.baseline"] = "real_only"
    run_id = client.create_run(experiment_id, tags=tags).info.run_id
    client.log_param(run_id, "synth.ratio", 0.0 if baseline else 1.0)
    client.log_metric(run_id, "val_auc", auc)
    # Every fold of the default 5-fold split, spread around the mean (the gate pairs them by fold).
    for i, offset in enumerate(FOLD_SPREAD):
        client.log_metric(run_id, "fold_val_auc", auc + offset, step=i)  # as TrialRun.log_fold
    client.log_metric(run_id, "folds_done", len(FOLD_SPREAD))
    client.log_metric(run_id, "val_accuracy", auc - 0.1)
    if generator is not None:
        gans, refiners = generator
        run = TrialRun(client, run_id, cfg, CLASS_NAMES)
        out = tmp_path / trial_id
        out.mkdir()
        run._log_generator(SimpleNamespace(gans=gans, refiners=refiners), str(out))
    client.set_terminated(run_id, status=status)
    return run_id


def make_search(client, name, trials, tmp_path, tiny_gans):
    """trials: (trial_id, auc, status, baseline, with_generator); returns {trial_id: run_id}."""
    experiment_id = client.get_experiment_by_name(name) or client.create_experiment(name)
    experiment_id = getattr(experiment_id, "experiment_id", experiment_id)
    parent = client.create_run(experiment_id, tags={"gantune.role": "search"}).info.run_id
    client.log_dict(parent, {"search": {"metric": "val_auc", "mode": "max"}}, "config/resolved_space.json")
    ids = {}
    for trial_id, auc, status, baseline, with_generator in trials:
        ids[trial_id] = make_trial(
            client, experiment_id, parent, trial_id, auc, status=status, baseline=baseline,
            generator=tiny_gans if with_generator else None, tmp_path=tmp_path,
        )
    client.set_terminated(parent, status="FINISHED")
    return parent, ids


@pytest.fixture(scope="module")
def store(tmp_path_factory, tiny_gans):
    tmp = tmp_path_factory.mktemp("promote")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    client = MlflowClient(uri)
    client.create_experiment("prom", artifact_location=(tmp / "artifacts").as_uri())
    # An older search whose best trial is excellent: promote must look at the latest one only.
    make_search(
        client,
        "prom",
        [("old", 0.99, "FINISHED", False, True), ("oldbase", 0.5, "FINISHED", True, False)],
        tmp,
        tiny_gans,
    )
    parent, ids = make_search(client, "prom", [
        ("base", 0.70, "FINISHED", True, False),
        ("good", 0.80, "FINISHED", False, True),       # the one to promote
        ("nogen", 0.95, "FINISHED", False, False),     # best metric but no generator
        ("stopped", 0.97, "KILLED", False, True),      # stopped early by ASHA: not all folds
        ("diverged", 0.0, "FAILED", False, False),
    ], tmp, tiny_gans)
    client.create_experiment("worse", artifact_location=(tmp / "artifacts_w").as_uri())
    worse_parent, worse_ids = make_search(client, "worse", [
        ("base", 0.70, "FINISHED", True, False), ("gan", 0.65, "FINISHED", False, True),
    ], tmp, tiny_gans)
    return SimpleNamespace(uri=uri, client=client, tmp=tmp, parent=parent, ids=ids,
                           worse_parent=worse_parent, worse_ids=worse_ids)


def test_promote_registers_best_trial_with_generator_and_lineage(store):
    choice, version = promote(store.uri, "prom")
    assert choice.best.info.run_id == store.ids["good"]
    assert choice.baseline.info.run_id == store.ids["base"]
    assert version.name == "prom-generator"
    client = store.client
    by_alias = client.get_model_version_by_alias("prom-generator", "champion")
    assert by_alias.version == version.version and by_alias.run_id == store.ids["good"]
    tags = by_alias.tags
    assert tags["gantune.trial_run_id"] == store.ids["good"]
    assert tags["gantune.parent_run_id"] == store.parent
    assert tags["gantune.trial_id"] == "good"
    assert json.loads(tags["gantune.metrics"]) == pytest.approx({"val_auc": 0.80, "val_accuracy": 0.70})
    assert float(tags["gantune.paired_delta_val_auc_vs_real_only"]) == pytest.approx(0.10)
    assert json.loads(tags["gantune.config"]) == {"synth.ratio": "1.0"}
    assert float(tags["gantune.baseline_val_auc"]) == pytest.approx(0.70)
    assert float(tags["gantune.delta_val_auc_vs_real_only"]) == pytest.approx(0.10)
    assert tags["gantune.beats_baseline"] == "true" and tags["gantune.forced"] == "false"
    # Promoting the same search again adds no version; a new alias points at the same one.
    _, again = promote(store.uri, "prom", alias="again")
    assert again.version == version.version
    assert len(client.search_model_versions("name = 'prom-generator'")) == 1
    assert client.get_model_version_by_alias("prom-generator", "again").version == version.version


def test_promote_refuses_when_best_does_not_beat_baseline_unless_forced(store):
    with pytest.raises(PromoteError, match=r"lower bound -0.0500 \(Nadeau-Bengio corrected\) of the paired per-fold "
                                           "difference to real_only trial base, mean -0.0500"):
        promote(store.uri, "worse")
    with pytest.raises(MlflowException):
        store.client.get_registered_model("worse-generator")  # nothing registered
    code = cli.main(["promote", "--experiment", "worse", "--tracking-uri", store.uri])
    assert code == cli.EXIT_USAGE
    code = cli.main(["promote", "--experiment", "worse", "--tracking-uri", store.uri, "--force", "--alias", "trial"])
    assert code == 0
    version = store.client.get_model_version_by_alias("worse-generator", "trial")
    assert version.run_id == store.worse_ids["gan"] and version.tags["gantune.forced"] == "true"


def test_promote_errors_name_the_experiment(store):
    with pytest.raises(PromoteError, match="no MLflow experiment named 'nope'"):
        promote(store.uri, "nope")


@pytest.mark.parametrize("fmt", ["png", "npz", "mha"])
def test_generate_writes_n_images_per_class(store, tiny_gans, fmt, tmp_path):
    promote(store.uri, "prom", alias="gen")
    out = tmp_path / fmt
    code = cli.main(["generate", "models:/prom-generator@gen", "--num", "3", "--out", str(out),
                     "--format", fmt, "--seed", "5", "--tracking-uri", store.uri])
    assert code == 0
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["counts"] == {"malignant": 3, "normal_benign": 3}
    assert meta["class_names"] == list(CLASS_NAMES)
    assert meta["run_id"] == store.ids["good"] and meta["model_version"] is not None
    assert meta["seed"] == 5 and meta["refined"] is True
    # Reference: the same generators sampled directly, class 1 through its refiner.
    gans, refiners = tiny_gans
    with torch.no_grad():
        expected = {0: gans[0].sample(3, seed=5), 1: refiners[1].refine(gans[1].sample(3, seed=6))}
    expected_u8 = {c: np.round((x.numpy().clip(-1, 1) + 1) * 127.5).astype(np.uint8)[:, 0] for c, x in expected.items()}
    if fmt == "npz":
        pool = load_medmnist_npz(out / "synthetic.npz").pool
        assert pool.class_counts() == [3, 3]
        arrays = np.load(out / "synthetic.npz")
        assert arrays["train_images"].shape == (6, 28, 28) and arrays["train_labels"].shape == (6, 1)
        np.testing.assert_array_equal(arrays["train_images"][:3], expected_u8[0])
        np.testing.assert_array_equal(arrays["train_images"][3:], expected_u8[1])
        return
    import SimpleITK as sitk

    for c, folder in enumerate(("0_malignant", "1_normal_benign")):
        files = sorted((out / folder).glob(f"*.{fmt}"))
        assert len(files) == 3
        pixels = sitk.GetArrayFromImage(sitk.ReadImage(str(files[1])))
        if fmt == "png":
            np.testing.assert_array_equal(pixels, expected_u8[c][1])
        else:
            np.testing.assert_allclose(pixels, expected[c][1, 0].numpy(), atol=1e-6)


def test_generate_from_a_run_uri_and_bad_uri(store, tmp_path):
    out = tmp_path / "run"
    assert cli.main(["generate", f"runs:/{store.ids['good']}/generator", "--num", "2", "--out", str(out),
                     "--tracking-uri", store.uri]) == 0
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["model_version"] is None and sum(meta["counts"].values()) == 4
    assert (
        cli.main(["generate", "models:/nope@champion", "--num", "2", "--out", str(out), "--tracking-uri", store.uri])
        == cli.EXIT_USAGE
    )
    assert cli.main(["generate", f"runs:/{store.ids['base']}/generator", "--num", "2", "--out", str(out),
                     "--tracking-uri", store.uri]) == cli.EXIT_USAGE


def test_commands_refuse_an_unreachable_tracking_server(tmp_path):
    """Exit 2 with a clear message before anything starts (port 9 on loopback: nothing listens)."""
    space = Path(__file__).resolve().parents[2] / "spaces" / "demo.yaml"
    for argv in (["search", str(space), "--smoke-test"], ["promote", "--experiment", "x"],
                 ["generate", "models:/x@champion", "--num", "1", "--out", str(tmp_path)]):
        proc = subprocess.run([sys.executable, "-m", "gantune.search.cli", *argv, "--tracking-uri", "http://127.0.0.1:9"],
                              capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        assert "http://127.0.0.1:9 is not reachable" in proc.stderr and "Traceback" not in proc.stderr


def run_in_terminal(argv: list[str], cwd: Path, timeout: float = 120) -> tuple[int, str]:
    """Run a command with its stdout and stderr on a pseudo-terminal, as a person at a shell would."""
    import fcntl
    import os
    import pty
    import select
    import struct
    import termios

    leader, follower = pty.openpty()
    # A fresh pty is 0 x 0; give it the size of a usual terminal window, as a shell would.
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen(argv, stdout=follower, stderr=follower, cwd=cwd, close_fds=True)
    os.close(follower)
    chunks = []
    while True:
        ready, _, _ = select.select([leader], [], [], timeout)
        if not ready:
            proc.kill()
            raise TimeoutError(f"{argv} printed nothing for {timeout} s")
        try:
            data = os.read(leader, 4096)
        except OSError:  # EIO: the command closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    return proc.wait(timeout=timeout), b"".join(chunks).decode(errors="replace")


def test_generate_shows_progress_bars_on_a_terminal_and_none_in_a_log(store, tmp_path):
    promote(store.uri, "prom", alias="bars")
    argv = [sys.executable, "-m", "gantune.search.cli", "generate", "models:/prom-generator@bars",
            "--num", "5", "--tracking-uri", store.uri]
    code, shown = run_in_terminal([*argv, "--out", str(tmp_path / "tty")], tmp_path)
    assert code == 0, shown
    assert "sample: 100%" in shown and "2/2" in shown, shown  # one step per class
    assert "write: 100%" in shown and "10/10" in shown, shown  # one step per image
    logged = subprocess.run(
        [*argv, "--out", str(tmp_path / "log")], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert logged.returncode == 0 and "100%" not in logged.stdout + logged.stderr
    assert "wrote 10 images" in logged.stdout


def test_generate_draws_through_the_trials_score_filter(store, tiny_gans, tmp_path):
    """A trial that kept only images its discriminator scored >= t: generate applies the same
    filter (and then the refiner) unless --no-filter."""
    from dataclasses import replace

    from gantune.trainables.gans import FILTERS

    gans, refiners = tiny_gans
    with torch.no_grad():
        threshold = float(gans[0].score(gans[0].sample(64, seed=99)).median())  # about half pass
    cfg = TrialConfig()
    cfg = replace(cfg, synth=replace(cfg.synth, filter_threshold=threshold))
    experiment_id = store.client.create_experiment("filtered", artifact_location=(tmp_path / "art").as_uri())
    parent = store.client.create_run(experiment_id, tags={"gantune.role": "search"}).info.run_id
    run_id = make_trial(store.client, experiment_id, parent, "f", 0.9, generator=tiny_gans, tmp_path=tmp_path, cfg=cfg)
    uri = f"runs:/{run_id}/generator"

    code = cli.main(
        ["generate", uri, "--num", "4", "--out", str(tmp_path / "on"), "--format", "npz", "--tracking-uri", store.uri]
    )
    assert code == 0
    meta = json.loads((tmp_path / "on" / "metadata.json").read_text())
    assert meta["filter_threshold"] == pytest.approx(threshold) and set(meta["kept_fraction"]) == set(CLASS_NAMES)
    with torch.no_grad():
        kept0, fraction0 = FILTERS["d_score"](gans[0], 4, threshold, 0)
        assert bool((gans[0].score(kept0) >= threshold).all())
    written = np.load(tmp_path / "on" / "synthetic.npz")["train_images"][: len(kept0)]
    np.testing.assert_array_equal(written, np.round((kept0.numpy().clip(-1, 1) + 1) * 127.5).astype(np.uint8)[:, 0])
    assert meta["kept_fraction"]["malignant"] == pytest.approx(fraction0, abs=1e-4)

    code = cli.main(["generate", uri, "--num", "4", "--out", str(tmp_path / "off"), "--format", "npz", "--no-filter",
                     "--tracking-uri", store.uri])
    assert code == 0
    meta = json.loads((tmp_path / "off" / "metadata.json").read_text())
    assert meta["filter_threshold"] == 0.0 and meta["kept_fraction"] == {}
    raw = np.load(tmp_path / "off" / "synthetic.npz")["train_images"][:4]
    with torch.no_grad():
        expected = gans[0].sample(4, seed=0)
    np.testing.assert_array_equal(raw, np.round((expected.numpy().clip(-1, 1) + 1) * 127.5).astype(np.uint8)[:, 0])


def test_generate_refuses_a_non_empty_out_and_overwrite_replaces_only_its_own_output(store, tmp_path, capsys):
    out = tmp_path / "synth"
    argv = ["generate", f"runs:/{store.ids['good']}/generator", "--out", str(out), "--tracking-uri", store.uri]
    assert cli.main([*argv, "--num", "3"]) == 0
    assert cli.main([*argv, "--num", "1"]) == cli.EXIT_USAGE
    refused = capsys.readouterr().err
    assert f"--out {out} is not empty" in refused and "--overwrite" in refused
    assert cli.main([*argv, "--num", "1", "--overwrite"]) == 0
    meta = json.loads((out / "metadata.json").read_text())
    images = sorted(p for p in out.rglob("*.png"))
    assert len(images) == sum(meta["counts"].values()) == meta["files"]  # no stale images beside the new ones
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    assert cli.main([*argv[:3], str(other), *argv[4:], "--num", "1", "--overwrite"]) == cli.EXIT_USAGE
    assert (other / "notes.txt").read_text() == "keep me"
    assert "not a `gantune generate` output" in capsys.readouterr().err


def test_generate_refuses_an_out_that_is_a_file(store, tmp_path, capsys):
    """Defect 9 (issue 17): `generate --out <existing file>` gave a FileExistsError traceback."""
    out = tmp_path / "images.npz"
    out.write_bytes(b"someone's file")
    argv = ["generate", f"runs:/{store.ids['good']}/generator", "--out", str(out), "--num", "1",
            "--tracking-uri", store.uri]
    assert cli.main(argv) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert f"--out {out} is a file, not a folder" in err and "Traceback" not in err
    assert out.read_bytes() == b"someone's file"


def test_version():
    proc = subprocess.run([sys.executable, "-m", "gantune.search.cli", "--version"],
                          capture_output=True, text=True, timeout=120)
    from gantune import __version__

    assert proc.returncode == 0 and proc.stdout.strip() == f"gantune {__version__}"
