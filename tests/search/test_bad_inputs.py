"""The bad-input battery (issue 17): every case must exit non-zero, print no traceback, and name
the key, flag or file at fault, before any trial (or Ray) starts.

Cases run in-process through the CLI's `main(argv)` (an exception escaping it counts as a
traceback), plus a few real subprocesses. The config cases are generated from the config
dataclasses and FIELD_RANGES, so a new numeric field gets its below-range fixed value, its
out-of-range searched end and its bad `--set` value here by default. Categories, as in
../shared/docs/reviews/reliability.md: space files, datasets, flags / CLI values.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import traceback
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml

from gantune.search.cli import main
from gantune.trainables.config import (
    FIELD_RANGES,
    MOVED_KEYS,
    SECTIONS,
    field_types,
    is_int_field,
    is_numeric,
    outside_range,
)
from gantune.trainables.data.io import write_image

ROOT = Path(__file__).resolve().parents[2]
NPZ = ROOT / "data" / "breastmnist.npz"
FIXED_ONLY = ("data", "preprocess")  # sections a space cannot search (space.FIXED_SECTIONS)


@dataclass(frozen=True)
class Outcome:
    code: int
    output: str
    """stdout + stderr, plus the traceback of any exception that escaped main()."""


def run(argv: list[str]) -> Outcome:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:  # argparse's own usage errors
            code = exc.code if isinstance(exc.code, int) else 1
        except Exception:  # noqa: BLE001 - this is what the battery looks for
            err.write(traceback.format_exc())
            code = 1
    return Outcome(code, out.getvalue() + err.getvalue())


def assert_refused(outcome: Outcome, *names: str) -> None:
    assert outcome.code != 0, f"accepted:\n{outcome.output[-2000:]}"
    assert "Traceback" not in outcome.output, outcome.output[-4000:]
    for name in names:
        assert name in outcome.output, f"{name!r} not named in:\n{outcome.output[-2000:]}"


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Each case in its own folder with its own cache and tracking store; no server, no Ray."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GANTUNE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)


# --- Space files ---------------------------------------------------------------------------------

BASE_SPACE = {"data": {"path": str(NPZ), "folds": 3}, "synth": {"ratio": {"uniform": [0.0, 2.0]}}}


def space_file(tmp_path: Path, text_or_sections) -> Path:
    path = tmp_path / "bad.yaml"
    if isinstance(text_or_sections, str):
        path.write_text(text_or_sections)
    else:
        merged = {k: dict(v) if isinstance(v, dict) else v for k, v in BASE_SPACE.items()}
        for section, values in text_or_sections.items():
            merged[section] = {**merged.get(section, {}), **values} if isinstance(values, dict) else values
        path.write_text(yaml.safe_dump(merged))
    return path


NUMERIC_KEYS = sorted(
    f"{s}.{n}" for s, cls in SECTIONS.items() for n, tp in field_types(cls).items() if is_numeric(tp)
)


def bad_values(key: str) -> list:
    return [int(v) if is_int_field(key) else v for v in outside_range(FIELD_RANGES.get(key, FIELD_RANGES["preprocess.slice"]))]


def default_of(key: str):
    section, name = key.split(".")
    return getattr(SECTIONS[section](), name)


def searched_domain(key: str, bad):
    """A range with one bad end and the field's default (a valid value) at the other."""
    good = default_of(key)
    good = (1 if is_int_field(key) else 1e-3) if good is None else good
    low, high = (bad, good) if bad < good else (good, bad)
    if low == high:
        return None
    return {"int" if is_int_field(key) else "uniform": [low, high]}


FIXED_CASES = [pytest.param(k, v, id=f"{k}={v}") for k in NUMERIC_KEYS for v in bad_values(k)]
SEARCHED_CASES = [
    pytest.param(k, d, id=f"{k}~{d}")
    for k in NUMERIC_KEYS if k.split(".")[0] not in FIXED_ONLY
    for v in bad_values(k) if (d := searched_domain(k, v))
]


@pytest.mark.parametrize("key, value", FIXED_CASES)
def test_space_fixed_value_out_of_range(tmp_path, key, value):
    section, name = key.split(".")
    path = space_file(tmp_path, {section: {name: value}})
    assert_refused(run(["search", path, "--dry-run"]), str(path), f"'{key}' must be {FIELD_RANGES[key]}, got")


@pytest.mark.parametrize("key, domain", SEARCHED_CASES)
def test_space_searched_range_with_an_end_out_of_range(tmp_path, key, domain):
    section, name = key.split(".")
    path = space_file(tmp_path, {section: {name: domain}})
    assert_refused(run(["search", path, "--dry-run"]), f"'{key}' must be {FIELD_RANGES[key]}", "end of its searched range")


SPACE_CASES = {
    "syntax error": ("data: {path: x.npz, folds: 3\n", ["not valid YAML"]),
    "unknown key": ({"gan": {"lrr": 1e-4}}, ["'gan.lrr'"]),
    "unknown section": ({"gann": {"lr": 1e-4}}, ["['gann']"]),
    "string for an int": ({"gan": {"steps": "lots"}}, ["'gan.steps' must be int"]),
    "bool for an int": ({"gan": {"steps": True}}, ["'gan.steps' must be int, got True"]),
    "fraction for an int": ({"data": {"folds": 2.5}}, ["'data.folds' must be int", "not a whole number"]),
    "quoted number in an Optional": ({"preprocess": {"size": "80"}}, ["'preprocess.size' must be int or null, got '80'"]),
    "nan": ({"gan": {"lr": float("nan")}}, ["'gan.lr'", "not a finite number"]),
    "inverted range": ({"synth": {"ratio": {"uniform": [5, 1]}}}, ["'synth.ratio' uniform needs low < high"]),
    "empty range": ({"synth": {"ratio": {"uniform": [1, 1]}}}, ["'synth.ratio' uniform needs low < high"]),
    "strings as bounds": ({"gan": {"lr": {"uniform": ["0", "2"]}}}, ["'gan.lr' uniform needs [low, high]"]),
    "bools as bounds": ({"gan": {"alpha": {"uniform": [False, True]}}}, ["'gan.alpha' uniform needs [low, high]"]),
    "loguniform from 0": ({"gan": {"lr": {"loguniform": [0.0, 1e-3]}}}, ["'gan.lr' loguniform needs low > 0"]),
    "empty choice": ({"gan": {"batch_size": {"choice": []}}}, ["'gan.batch_size' choice needs a non-empty list"]),
    "bad choice": ({"gan": {"batch_size": {"choice": [0, 32]}}}, ["'gan.batch_size' must be >= 1, got 0", "one of its choices"]),
    "unknown domain": ({"gan": {"lr": {"normal": [0, 1]}}}, ["'gan.lr' must be a value or one of"]),
    "searched data key": ({"data": {"folds": {"int": [2, 5]}}}, ["'data.folds' cannot be searched"]),
    "searched preprocess key": ({"preprocess": {"size": {"int": [32, 64]}}}, ["'preprocess.size' cannot be searched"]),
    "unknown family": ({"gan": {"family": "stylegan9"}}, ["'gan.family' must be one of"]),
    "unknown classifier": ({"classifier": {"name": "vgg"}}, ["'classifier.name' must be one of"]),
    "metric typo": ({"search": {"metric": "val_aucc"}}, ["'search.metric' must be a metric trials report, got 'val_aucc'", "val_auc_min_fold"]),
    "metric without prefix": ({"search": {"metric": "auc"}}, ["'search.metric'", "'auc'", "val_accuracy"]),
    "objective typo": ({"search": {"metric": ["val_auc", "val_sensitivty"], "mode": ["max", "max"]}}, ["'search.objectives'", "'val_sensitivty'"]),
    "gen metric off": ({"search": {"metric": "gen_precision"}}, ["'search.metric'", "synth.gen_metrics"]),
    "bad mode": ({"search": {"mode": "maximise"}}, ["'search.mode' must be max or min"]),
    "bad scheduler": ({"search": {"scheduler": "pbt"}}, ["'search.scheduler'"]),
    "bad sampler": ({"search": {"sampler": "cmaes"}}, ["'search.sampler'"]),
    "zero samples": ({"search": {"num_samples": 0}}, ["'search.num_samples' must be a whole number >= 1"]),
    "bool samples": ({"search": {"num_samples": True}}, ["'search.num_samples' must be a whole number >= 1"]),
    "unknown search key": ({"search": {"metrik": "val_auc"}}, ["'search.metrik'"]),
    "unknown baseline": ({"search": {"baselines": ["gan_only"]}}, ["'search.baselines'", "gan_only"]),
    "baseline impossible": ({"synth": {"ratio": {"uniform": [0.5, 2.0]}}}, ["'search.baselines' lists 'real_only'"]),
    "name escapes": ({"name": "../../escape"}, ["'name' '../../escape'"]),
    "name with a separator": ({"name": "a/b"}, ["'name' 'a/b'", "path separator"]),
    "name with a control character": ({"name": "a\x07b"}, ["'name'", "control character"]),
    "name not a string": ({"name": 42}, ["'name' must be a string"]),
    "section not a mapping": ({"gan": [1, 2]}, ["'gan' must be a mapping"]),
    "empty file": ("", ["expected a mapping of sections, got NoneType"]),
    "top-level list": ("- 1\n- 2\n", ["expected a mapping of sections, got list"]),
    "python tag": ("name: !!python/object/apply:os.system ['true']\n", ["not valid YAML"]),
    **{f"moved key {old}": ({"preprocess": {old.split(".")[1]: 1.5}}, [f"'{old}' was removed: use '{new}'"]) for old, new in MOVED_KEYS.items()},
    "enum in preprocess": ({"preprocess": {"crop": "roi"}}, ["'preprocess.crop'"]),
    "clip_low above clip_high": ({"preprocess": {"clip_low": 60.0, "clip_high": 40.0}}, ["'preprocess.clip_high'"]),
}


@pytest.mark.parametrize("content, names", SPACE_CASES.values(), ids=SPACE_CASES.keys())
def test_space_file(tmp_path, content, names):
    path = space_file(tmp_path, content)
    assert_refused(run(["search", path, "--dry-run"]), str(path), *names)


def test_missing_space_file(tmp_path):
    assert_refused(run(["search", tmp_path / "nope.yaml", "--dry-run"]), "nope.yaml", "no such space file")


# --- --set values and flags ----------------------------------------------------------------------

DEMO = ROOT / "spaces" / "demo.yaml"


@pytest.mark.parametrize("key, value", FIXED_CASES)
def test_set_value_out_of_range(key, value):
    assert_refused(run(["search", DEMO, "--dry-run", "--set", f"{key}={value}"]), f"'{key}' must be {FIELD_RANGES[key]}, got")


FLAG_CASES = {
    "--num-samples 0": (["search", DEMO, "--dry-run", "--num-samples", "0"], ["'search.num_samples'"]),
    "--num-samples abc": (["search", DEMO, "--dry-run", "--num-samples", "abc"], ["--num-samples"]),
    "--max-concurrent -1": (["search", DEMO, "--dry-run", "--max-concurrent", "-1"], ["'search.max_concurrent'"]),
    "--max-concurrent 0": (["search", DEMO, "--dry-run", "--max-concurrent", "0"], ["'search.max_concurrent'"]),
    "--set without =": (["search", DEMO, "--dry-run", "--set", "gan.lr"], ["--set expects key=value"]),
    "--set unknown key": (["search", DEMO, "--dry-run", "--set", "gan.foo=1"], ["'gan.foo'"]),
    "--set unknown section": (["search", DEMO, "--dry-run", "--set", "foo.bar=1"], ["'foo.bar'"]),
    "--set string for a float": (["search", DEMO, "--dry-run", "--set", "gan.lr=fast"], ["'gan.lr' must be float"]),
    "--set metric typo": (["search", DEMO, "--dry-run", "--set", "search.metric=val_aucc"], ["'search.metric'", "did you mean 'val_auc'"]),
    "--set metric auc": (["search", DEMO, "--dry-run", "--set", "search.metric=auc"], ["'search.metric'", "val_auc"]),
    "--set old preprocess.gamma": (["search", DEMO, "--dry-run", "--set", "preprocess.gamma=1.5"], ["'enhance.gamma'"]),
    "--set old preprocess.bilateral": (["search", DEMO, "--dry-run", "--set", "preprocess.bilateral=true"], ["'enhance.bilateral'"]),
    "--set ratio searched negative": (["search", DEMO, "--dry-run", "--set", "synth.ratio=-1"], ["'synth.ratio' must be >= 0"]),
    "--set filter 5": (["search", DEMO, "--dry-run", "--set", "synth.filter_threshold=5"], ["'synth.filter_threshold' must be in [0, 1]"]),
    "--data missing": (["search", DEMO, "--data", "nope/missing.npz"], ["'data.path'", "nope/missing.npz"]),
    "--cpus-per-trial abc": (["search", DEMO, "--dry-run", "--cpus-per-trial", "abc"], ["--cpus-per-trial"]),
    "unknown command": (["serach", DEMO], ["serach"]),
    "data check missing path": (["data", "check", "nope/missing"], ["nope/missing"]),
    "data check --folds abc": (["data", "check", str(NPZ), "--folds", "abc"], ["--folds"]),
    "data check --folds 1": (["data", "check", str(NPZ), "--folds", "1"], ["folds"]),
    "data check --space bad": (["data", "check", str(NPZ), "--space", "nope.yaml"], ["nope.yaml"]),
    "server --port 0": (["server", "--port", "0", "--dry-run"], ["--port"]),
    "server --port 70000": (["server", "--port", "70000", "--dry-run"], ["--port"]),
}

FLAG_CASES.update({
    "data check --folds 0": (["data", "check", str(NPZ), "--folds", "0"], ["--folds must be >= 2", "got 0"]),
    "--max-failures -1": (["search", DEMO, "--dry-run", "--max-failures", "-1"], ["--max-failures must be >= 0"]),
    "--experiment ../../escape": (["search", DEMO, "--dry-run", "--experiment", "../../escape"], ["--experiment '../../escape'"]),
    "--experiment ..": (["search", DEMO, "--dry-run", "--experiment", ".."], ["--experiment '..'", "contains '..'"]),
})


@pytest.mark.parametrize("argv, names", FLAG_CASES.values(), ids=FLAG_CASES.keys())
def test_flag(argv, names):
    assert_refused(run(argv), *names)


# --- Datasets --------------------------------------------------------------------------------------


def breast_arrays() -> dict[str, np.ndarray]:
    with np.load(NPZ) as a:
        return {k: a[k] for k in a.files}


def small_arrays(n: int = 40) -> dict[str, np.ndarray]:
    """BreastMNIST cut to n images per split (both classes in each)."""
    return {k: v[:n] for k, v in breast_arrays().items()}


def npz(tmp_path: Path, name: str = "bad.npz", **changes) -> Path:
    arrays = {**small_arrays(), **changes}
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def png_tree(root: Path, classes=("benign", "malignant"), per_class: int = 12, size: int = 16) -> Path:
    rng = np.random.default_rng(0)
    for c in classes:
        for i in range(per_class):
            write_image(root / c / f"img_{i:03d}.png", rng.integers(0, 256, (size, size), dtype=np.uint8))
    return root


def manifest(root: Path, rows: list[str], header: str = "path,label", lead: str = "") -> Path:
    png_tree(root / "img_src", classes=("all",), per_class=24)
    for i, p in enumerate(sorted((root / "img_src" / "all").glob("*.png"))):
        (root / "img").mkdir(exist_ok=True)
        p.rename(root / "img" / f"{i}.png")
    path = root / "manifest.csv"
    path.write_text(lead + "\n".join([header, *rows]) + "\n")
    return path


def good_rows(labels=("benign", "malignant")) -> list[str]:
    return [f"img/{i}.png,{labels[i % 2]}" for i in range(24)]


def dataset_npz_cases():
    """name -> (build(tmp_path) -> path, names expected in the output)."""
    a = small_arrays()
    float_big = a["train_images"].astype(np.float32) * 16.0
    return {
        "npz truncated": (lambda t: _write(t / "cut.npz", NPZ.read_bytes()[: NPZ.stat().st_size // 2]), ["cut.npz", "truncated or corrupt"]),
        "npz is text": (lambda t: _write(t / "text.npz", b"just some text\n"), ["text.npz", "not a .npz archive"]),
        "npz empty file": (lambda t: _write(t / "empty.npz", b""), ["empty.npz", "not a .npz archive"]),
        "npz count mismatch": (lambda t: npz(t, train_labels=a["train_labels"][:30]), ["bad.npz", "'train_images' holds 40 images but 'train_labels' 30"]),
        "npz string labels": (lambda t: npz(t, train_labels=np.array(["a", "b"] * 20)), ["bad.npz", "'train_labels' must hold integer class indices"]),
        "npz fractional labels": (lambda t: npz(t, val_labels=a["val_labels"] + 0.5), ["bad.npz", "'val_labels'"]),
        "npz negative labels": (lambda t: npz(t, test_labels=a["test_labels"].astype(np.int64) - 1), ["bad.npz", "'test_labels' holds negative labels"]),
        "npz labels out of range": (lambda t: npz(t, train_labels=np.where(a["train_labels"] == 1, 255, 0).astype(np.uint8)), ["bad.npz", "labels out of range"]),
        "npz multi-label": (lambda t: npz(t, train_labels=np.zeros((40, 3), np.uint8)), ["bad.npz", "'train_labels' must hold one label per image"]),
        "npz missing keys": (lambda t: _savez(t / "keys.npz", train_images=a["train_images"]), ["keys.npz", "missing MedMNIST keys"]),
        "npz float beyond [0, 1]": (lambda t: npz(t, train_images=float_big, val_images=a["val_images"].astype(np.float32) * 16,
                                                  test_images=a["test_images"].astype(np.float32) * 16), ["bad.npz", "neither 8-bit"]),
        "npz uint16 above 255": (lambda t: npz(t, **{k: a[k].astype(np.uint16) * 16 for k in ("train_images", "val_images", "test_images")}),
                                 ["bad.npz", "uint16 values in [16, 4064]", "neither 8-bit"]),
        "npz NaN pixels": (lambda t: npz(t, **{k: _with_nan(a[k]) for k in ("train_images", "val_images", "test_images")}), ["bad.npz", "NaN"]),
        "npz mixed dtypes": (lambda t: npz(t, test_images=a["test_images"].astype(np.float32) / 255), ["bad.npz", "different dtypes"]),
        "npz mixed shapes": (lambda t: npz(t, test_images=np.zeros((40, 32, 32), np.uint8)), ["bad.npz", "differ in shape"]),
        "npz bad image shape": (lambda t: npz(t, train_images=np.zeros((40, 28), np.uint8)), ["bad.npz", "'train_images' must be (N, H, W)"]),
        "npz object array": (lambda t: _savez(t / "obj.npz", **{**a, "train_images": np.array([None] * 40, dtype=object)}), ["obj.npz"]),
    }


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _savez(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def _with_nan(x: np.ndarray) -> np.ndarray:
    out = x.astype(np.float32) / 255
    out[0, 0, 0] = np.nan
    return out


def _folder_case(build_extra):
    def build(t: Path) -> Path:
        root = png_tree(t / "tree")
        build_extra(root)
        return root
    return build


def _corrupt(root: Path) -> None:
    p = root / "benign" / "img_003.png"
    p.write_bytes(p.read_bytes()[:40])


def _nan_mha(root: Path) -> None:
    x = np.random.default_rng(1).random((16, 16)).astype(np.float32)
    x[3, 3] = np.nan
    write_image(root / "benign" / "nan.mha", x)


def dataset_folder_cases():
    return {
        "folder empty": (lambda t: _mkdir(t / "empty"), ["empty", "found 0 class folder(s)"]),
        "folder one class": (lambda t: png_tree(t / "one", classes=("only",)), ["one", "found 1 class folder(s)"]),
        "folder empty class": (_folder_case(lambda r: (r / "third").mkdir()), ["third", "class folder holds no images"]),
        "folder corrupt png": (_folder_case(_corrupt), ["img_003.png", "cannot be read as an image"]),
        "folder text named png": (_folder_case(lambda r: (r / "benign" / "fake.png").write_text("hello")), ["fake.png", "cannot be read"]),
        "folder odd size": (_folder_case(lambda r: write_image(r / "benign" / "big.png", np.zeros((40, 40), np.uint8) + 9)), ["big.png", "40x40"]),
        "folder rgb among gray": (_folder_case(lambda r: write_image(r / "benign" / "rgb.png", np.zeros((16, 16, 3), np.uint8) + 9, rgb=True)),
                                  ["rgb.png", "channel"]),
        "folder NaN pixels": (_folder_case(_nan_mha), ["nan.mha", "NaN"]),
        "folder name control char": (lambda t: png_tree(t / "ctl", classes=("benign", "mal\x07ignant")), ["class folder name", "control character"]),
        "folder name with ..": (lambda t: png_tree(t / "dots", classes=("benign", "a..b")), ["'a..b'", "contains '..'"]),
        "folder too few per class": (lambda t: png_tree(t / "few", per_class=3), ["few", "test set"]),
    }


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


def _manifest_case(rows_fn, header="path,label", lead=""):
    return lambda t: manifest(t / "m", rows_fn(), header, lead)


def dataset_csv_cases():
    rows = good_rows()
    return {
        "csv blank first line": (_manifest_case(lambda: rows, lead="\n"), ["manifest.csv:1", "first line is empty"]),
        "csv label with /": (_manifest_case(lambda: [*rows[:-1], "img/23.png,x/../../y"]), ["manifest.csv:25", "'x/../../y'", "path separator"]),
        "csv label ..": (_manifest_case(lambda: [*rows[:-1], "img/23.png,.."]), ["manifest.csv:25", "contains '..'"]),
        "csv label script": (_manifest_case(lambda: [*rows[:-1], "img/23.png,<script>alert(1)</script>"]), ["manifest.csv:25", "path separator"]),
        "csv label control char": (_manifest_case(lambda: [*rows[:-1], "img/23.png,be\tnign"]), ["manifest.csv:25", "control character"]),
        "csv missing file": (_manifest_case(lambda: [*rows, "img/nope.png,benign"]), ["manifest.csv:26", "img/nope.png", "matches no file"]),
        "csv duplicate row": (_manifest_case(lambda: [*rows, rows[0]]), ["manifest.csv:26", "listed twice"]),
        "csv outside root": (_manifest_case(lambda: [*rows, "../x.png,benign"]), ["manifest.csv:26", "outside the dataset root"]),
        "csv absolute path": (_manifest_case(lambda: [*rows, "/etc/passwd,benign"]), ["manifest.csv:26", "/etc/passwd", "outside the dataset root"]),
        "csv wrong header": (_manifest_case(lambda: rows, header="file,class"), ["manifest.csv", "missing columns"]),
        "csv header only": (_manifest_case(lambda: [], header="path,label"), ["manifest.csv", "no rows"]),
        "csv one label": (_manifest_case(lambda: [f"img/{i}.png,benign" for i in range(24)]), ["manifest.csv", "1 label(s) with files"]),
        "csv empty label": (_manifest_case(lambda: [*rows, "img/0.png,"]), ["manifest.csv:26", "empty 'path' or 'label'"]),
        "csv empty patient": (_manifest_case(lambda: [r + ",p1" for r in rows[:-1]] + [rows[-1] + ","], header="path,label,patient_id"),
                              ["manifest.csv:25", "patient_id"]),
        "csv not utf-8": (lambda t: _write(t / "latin.csv", "path,label\nimg/é.png,b\n".encode("latin-1")), ["latin.csv", "cannot read the manifest"]),
    }


def _volume(t: Path, name: str, cut: int | None = None) -> Path:
    root = png_tree(t / "vol")
    path = root / "benign" / name
    write_image(path, np.random.default_rng(2).integers(0, 1000, (6, 16, 16)).astype(np.int16), (1.0, 1.0, 2.0))
    if cut:
        path.write_bytes(path.read_bytes()[:cut])
    return root


def dataset_medical_cases():
    return {
        "nii.gz truncated": (lambda t: _volume(t, "ct.nii.gz", cut=400), ["ct.nii.gz", "cannot be read as an image"]),
        "nii truncated": (lambda t: _volume(t, "ct.nii", cut=800), ["ct.nii", "cannot be read as an image"]),
        "mha truncated": (lambda t: _volume(t, "ct.mha", cut=300), ["ct.mha", "cannot be read as an image"]),
        "nrrd truncated": (lambda t: _volume(t, "ct.nrrd", cut=250), ["ct.nrrd", "cannot be read as an image"]),
        "dcm garbage": (_folder_case(lambda r: (r / "benign" / "x.dcm").write_bytes(b"DICM" * 10)), ["x.dcm", "cannot be read"]),
        "mhd without raw": (_folder_case(lambda r: (r / "benign" / "h.mhd").write_text(
            "ObjectType = Image\nNDims = 2\nDimSize = 16 16\nElementType = MET_UCHAR\nElementDataFile = gone.raw\n")), ["h.mhd"]),
    }


DATASET_CASES = {**dataset_npz_cases(), **dataset_folder_cases(), **dataset_csv_cases(), **dataset_medical_cases()}


@pytest.mark.parametrize("build, names", DATASET_CASES.values(), ids=DATASET_CASES.keys())
def test_dataset_check(tmp_path, build, names):
    path = build(tmp_path)
    assert_refused(run(["data", "check", path, "--folds", "2"]), *names)


SEARCH_DATA_CASES = ["npz truncated", "npz count mismatch", "npz string labels", "npz float beyond [0, 1]", "csv blank first line",
                     "csv label with /", "folder corrupt png", "nii.gz truncated"]


@pytest.mark.parametrize("name", SEARCH_DATA_CASES)
def test_dataset_search(tmp_path, name):
    """`search --data` refuses the same datasets before Ray starts (exit 2, nothing under ray_results)."""
    build, names = DATASET_CASES[name]
    outcome = run(["search", DEMO, "--data", build(tmp_path), "--smoke-test", "--set", "data.folds=2"])
    assert outcome.code == 2
    assert_refused(outcome, *names)
    assert not (tmp_path / "ray_results").exists()


def test_dataset_slice_outside_the_volume(tmp_path):
    root = _volume(tmp_path, "ct.mha")
    space = space_file(tmp_path, {"preprocess": {"slice": 99}})
    assert_refused(run(["data", "check", root, "--folds", "2", "--space", space]), "ct.mha", "slice index 99 is outside")


def test_dataset_mask_crop_without_masks(tmp_path):
    root = png_tree(tmp_path / "tree")
    space = space_file(tmp_path, {"preprocess": {"crop": "mask"}})
    assert_refused(run(["data", "check", root, "--folds", "2", "--space", space]), "img_000.png", "crop 'mask' needs a mask file")


def test_dataset_unwritable_cache_folder(tmp_path, monkeypatch):
    root = png_tree(tmp_path / "tree")
    (tmp_path / "not_a_dir").write_text("a file where the cache folder should be")
    monkeypatch.setenv("GANTUNE_CACHE_DIR", str(tmp_path / "not_a_dir" / "cache"))
    assert_refused(run(["data", "check", root, "--folds", "2"]), "not_a_dir", "GANTUNE_CACHE_DIR")


def test_dataset_positive_class_beyond_the_classes(tmp_path):
    outcome = run(["search", DEMO, "--data", NPZ, "--smoke-test", "--set", "data.positive_class=7"])
    assert outcome.code == 2
    assert_refused(outcome, "'data.positive_class' must be a class index below the dataset's 2 classes")
    assert not (tmp_path / "ray_results").exists()


# --- What must be accepted, and converted correctly ------------------------------------------------


@pytest.mark.parametrize(
    "convert, said",
    [
        (lambda x: x.astype(np.float32) / 255, "read as [0, 1]) -> 2x - 1"),
        (lambda x: x.astype(np.float64) / 127.5 - 1, "read as [-1, 1]) -> kept as they are"),
        (lambda x: x.astype(np.int64), "whole numbers (read as 8-bit 0..255)"),
    ],
    ids=["float [0, 1]", "float [-1, 1]", "int64 0..255"],
)
def test_npz_pixel_ranges_are_converted_like_uint8_and_said(tmp_path, convert, said):
    """Issue 17 defect 1: float [0, 1] images were scaled as uint8 into [-1, -0.992]."""
    from gantune.trainables.data.datasets import load_medmnist_npz

    a = small_arrays()
    path = npz(tmp_path, **{k: convert(a[k]) for k in ("train_images", "val_images", "test_images")})
    reference = npz(tmp_path, "uint8.npz")
    got, want = load_medmnist_npz(path), load_medmnist_npz(reference)
    np.testing.assert_allclose(got.pool.images.numpy(), want.pool.images.numpy(), atol=1e-6)
    np.testing.assert_allclose(got.test.images.numpy(), want.test.images.numpy(), atol=1e-6)
    assert float(got.pool.images.max() - got.pool.images.min()) > 1.5  # spread over [-1, 1], not squashed
    outcome = run(["data", "check", path, "--folds", "2"])
    assert outcome.code == 0 and said in outcome.output, outcome.output


def test_cli_shows_how_folder_pixels_are_scaled(tmp_path):
    outcome = run(["data", "check", png_tree(tmp_path / "tree"), "--folds", "2"])
    assert outcome.code == 0
    assert "pixels     8-bit unsigned integer (24) -> per image minmax to [0, 1], then 2x - 1" in outcome.output


# --- A few real subprocesses -------------------------------------------------------------------------


def gantune(args: list, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
    env.update({"GANTUNE_CACHE_DIR": str(cwd / "cache"), "OMP_NUM_THREADS": "1"})
    return subprocess.run([sys.executable, "-m", "gantune.search.cli", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


SUBPROCESS_CASES = {
    "batch 0, no dry run": (lambda t: ["search", DEMO, "--smoke-test", "--set", "gan.batch_size=0"], ["'gan.batch_size' must be >= 1, got 0"]),
    "metric typo, no dry run": (lambda t: ["search", DEMO, "--smoke-test", "--set", "search.metric=val_aucc"], ["'search.metric'"]),
    "truncated npz search": (lambda t: ["search", DEMO, "--smoke-test", "--data", DATASET_CASES["npz truncated"][0](t)], ["cut.npz"]),
    "csv blank line check": (lambda t: ["data", "check", DATASET_CASES["csv blank first line"][0](t), "--folds", "2"], ["manifest.csv:1"]),
    "ratio range below 0": (lambda t: ["search", space_file(t, {"synth": {"ratio": {"uniform": [-2.0, 2.0]}}}), "--dry-run"],
                            ["'synth.ratio' must be >= 0, got -2.0"]),
}


@pytest.mark.parametrize("make_args, names", SUBPROCESS_CASES.values(), ids=SUBPROCESS_CASES.keys())
def test_subprocess(tmp_path, make_args, names):
    proc = gantune(make_args(tmp_path), tmp_path)
    assert_refused(Outcome(proc.returncode, proc.stdout + proc.stderr), *names)
    assert not (tmp_path / "ray_results").exists()  # refused before Ray started
