"""`check_dataset` / `load_dataset` / `gantune data check`: every bad input gets a message naming
the file and what to do; a good tree loads as float32 NCHW in [-1, 1]; patients never straddle
folds or the test split."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from gantune.trainables.data.check import check_dataset, data_check_main, format_report, load_dataset
from gantune.trainables.data.datasets import DatasetError
from gantune.trainables.data.folds import make_folds
from gantune.trainables.data.io import read_slices, write_image
from gantune.trainables.data.preprocess import PreprocessConfig


def gray(path, seed=0, shape=(12, 12)):
    write_image(path, np.random.default_rng(seed).integers(0, 255, size=shape, dtype=np.uint8))
    return path


def small_tree(root, per_class=6, classes=("a", "b")):
    for c in classes:
        for i in range(per_class):
            gray(root / c / f"{i}.mha", seed=hash((c, i)) % 1000)
    return root


def error_text(report):
    return "\n".join(str(i) for i in report.errors)


def assert_refused(root, pattern, folds=3):
    """check_dataset lists the error and says not usable; load_dataset raises the same message."""
    report = check_dataset(root, PreprocessConfig(), folds=folds)
    assert not report.usable
    assert re.search(pattern, error_text(report)), error_text(report)
    with pytest.raises(DatasetError, match=pattern):
        load_dataset(root, PreprocessConfig(), folds=folds, seed=0)
    return report


# --- Bad inputs, one message each -----------------------------------------------------------


def test_corrupt_file(tmp_path):
    bad = small_tree(tmp_path) / "a" / "3.mha"
    bad.write_bytes(b"\x89garbage" * 10)
    assert_refused(
        tmp_path, re.escape(str(bad.resolve())) + r": cannot be read as an image .*re-export it, or remove it"
    )


def test_truncated_file(tmp_path):
    bad = small_tree(tmp_path) / "b" / "x.nii.gz"
    gray(bad, shape=(64, 64))
    bad.write_bytes(bad.read_bytes()[:-40])
    assert_refused(
        tmp_path, re.escape(str(bad.resolve())) + r": cannot be read as an image \(compressed stream is broken"
    )


def test_non_image_files(tmp_path):
    small_tree(tmp_path)
    (tmp_path / "a" / "readme.txt").write_text("notes")  # unknown extension: listed, ignored
    report = check_dataset(tmp_path, PreprocessConfig(), folds=3)
    assert report.usable
    [warning] = report.issues
    assert warning.path.endswith("readme.txt") and "not an image file (unknown extension); ignored" in warning.reason
    fake = tmp_path / "b" / "scan.png"
    fake.write_text("this is text, not a PNG")  # image extension: unreadable, an error
    assert_refused(tmp_path, re.escape(str(fake.resolve())) + r": cannot be read as an image")


def test_empty_class_folder(tmp_path):
    small_tree(tmp_path)
    (tmp_path / "c").mkdir()
    assert_refused(
        tmp_path, re.escape(str(tmp_path / "c")) + r": class folder holds no images; add images or remove the folder"
    )


def test_class_with_fewer_images_than_folds(tmp_path):
    small_tree(tmp_path, per_class=6)
    for i in range(2, 6):
        (tmp_path / "b" / f"{i}.mha").unlink()
    assert_refused(
        tmp_path, r"class 'b' has \d image\(s\) in the training pool .* fewer than the 3 folds; add images or lower"
    )


def test_mixed_channel_counts(tmp_path):
    small_tree(tmp_path)
    rgb = tmp_path / "a" / "colour.png"
    write_image(rgb, np.zeros((12, 12, 3), np.uint8) + np.arange(12, dtype=np.uint8)[:, None, None], rgb=True)
    report = assert_refused(
        tmp_path,
        re.escape(str(rgb.resolve()))
        + r": has 3 channel\(s\) but most images have 1 \(mixed channel counts\); convert",
    )
    assert report.channels == {1: 12}


def test_different_sizes_without_target_size(tmp_path):
    small_tree(tmp_path)
    odd = gray(tmp_path / "a" / "big.mha", shape=(20, 20))
    assert_refused(
        tmp_path,
        re.escape(str(odd.resolve())) + r": is 20x20 after cropping but most images are 12x12; set 'preprocess.size'",
    )
    assert check_dataset(tmp_path, PreprocessConfig(size=16), folds=3).usable


def manifest(root, rows):
    (root / "manifest.csv").write_text("path,label\n" + "\n".join(rows) + "\n")


def test_manifest_label_matching_no_file(tmp_path):
    small_tree(tmp_path)
    rows = [f"{c}/{i}.mha,{c}" for c in "ab" for i in range(6)] + ["c/0.mha,c", "c/1.mha,c"]
    manifest(tmp_path, rows)
    report = assert_refused(
        tmp_path, r"manifest\.csv:14: path 'c/0\.mha' \(label 'c'\) matches no file; fix the path or delete the row"
    )
    assert "label 'c' matches no file (all 2 of its rows" in error_text(report)


def test_manifest_path_outside_root(tmp_path):
    root = small_tree(tmp_path / "ds")
    gray(tmp_path / "secret.mha")
    manifest(root, [f"{c}/{i}.mha,{c}" for c in "ab" for i in range(6)] + ["../secret.mha,a"])
    assert_refused(
        root,
        r"manifest\.csv:14: path '\.\./secret\.mha' is outside the dataset root .*; "
        r"move the file under it or fix the path",
    )


def test_not_a_dataset(tmp_path):
    (tmp_path / "x.txt").write_text("")
    report = check_dataset(tmp_path / "x.txt", PreprocessConfig())
    assert not report.usable and "not a dataset" in error_text(report)
    with pytest.raises(DatasetError, match="not a dataset"):
        load_dataset(tmp_path / "x.txt", PreprocessConfig(), folds=3, seed=0)


def test_skip_bad_leaves_unreadable_files_out_and_names_them(tmp_path):
    bad = small_tree(tmp_path) / "a" / "2.mha"
    bad.write_bytes(b"junk")
    report = check_dataset(tmp_path, PreprocessConfig(), folds=3, skip_bad=True)
    assert report.usable and report.counts == (5, 6)
    assert "[skipped: --skip-bad]" in str(report.issues[0])
    splits, skipped = load_dataset(tmp_path, PreprocessConfig(), folds=3, seed=0, skip_bad=True)
    assert skipped == [str(bad.resolve())]
    assert len(splits.pool) + len(splits.test) == 11
    # skip_bad does not hide problems other than unreadable files
    (tmp_path / "c").mkdir()
    with pytest.raises(DatasetError, match="class folder holds no images"):
        load_dataset(tmp_path, PreprocessConfig(), folds=3, seed=0, skip_bad=True)


# --- Good data -------------------------------------------------------------------------------


def test_breastmnist_tree_check_passes_and_loads_in_imagedataset_convention(breast_tree, breast_npz, capsys):
    args = argparse.Namespace(path=str(breast_tree), folds=5, skip_bad=False)
    assert data_check_main(args) == 0
    out = capsys.readouterr().out
    assert "2: malignant 40, normal_benign 40" in out and "28x28 (80)" in out and "=> usable" in out

    splits, skipped = load_dataset(breast_tree, PreprocessConfig(), folds=5, seed=0)
    assert skipped == [] and splits.groups is None
    pool, test = splits.pool, splits.test
    assert pool.images.dtype == torch.float32 and pool.images.shape == (64, 1, 28, 28) and len(test) == 16
    assert pool.class_counts() == [32, 32] and test.class_counts() == [8, 8]
    assert pool.class_names == ("malignant", "normal_benign")
    # against numpy: each test image is its source npz image, min-max scaled to [-1, 1]
    train = np.load(breast_npz)["train_images"]
    for k, name in enumerate(splits.test_files[:4]):
        index = int(name.rsplit("_", 1)[1].split(".")[0])
        a = train[index].astype(np.float64)
        ref = (a - a.min()) / (a.max() - a.min()) * 2 - 1
        np.testing.assert_allclose(test.images[k, 0].numpy(), ref, atol=1e-6)
    assert len(splits.test_files) == 16 and all(Path(f).is_file() for f in splits.test_files)


def test_breastmnist_tree_with_one_corrupt_file_is_refused_by_name(breast_tree, capsys):
    bad = sorted((breast_tree / "normal_benign").glob("*.mha"))[3]
    bad.write_bytes(bad.read_bytes()[:200])
    args = argparse.Namespace(path=str(breast_tree), folds=5, skip_bad=False)
    assert data_check_main(args) == 1
    out = capsys.readouterr().out
    assert str(bad.resolve()) in out and "NOT usable" in out and "--skip-bad" in out
    assert data_check_main(argparse.Namespace(path=str(breast_tree), folds=5, skip_bad=True)) == 0


def test_medmnist_npz_summary_and_load(breast_npz):
    report = check_dataset(breast_npz, PreprocessConfig(), folds=5)
    assert report.usable and report.layout == "medmnist"
    assert report.counts == (147 + 21 + 42, 399 + 57 + 114) and report.pool_counts == (168, 456)
    assert report.image_sizes == {"28x28": 780} and report.channels == {1: 780}
    assert "imbalance 2.71" in format_report(report)
    splits, skipped = load_dataset(breast_npz, PreprocessConfig(size=64), folds=5, seed=0)
    assert splits.pool.images.shape == (624, 1, 64, 64) and len(splits.test) == 156 and skipped == []


def test_patient_grouped_folds_and_test_split_never_split_a_patient(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for p in range(24):  # 24 patients with 2-4 images each, one diagnosis per patient
        label = "sick" if p % 3 else "healthy"
        for j in range(int(rng.integers(2, 5))):
            gray(tmp_path / "img" / f"p{p}_{j}.mha", seed=p * 10 + j)
            rows.append(f"img/p{p}_{j}.mha,{label},P{p:02d}")
    (tmp_path / "manifest.csv").write_text("path,label,patient_id\n" + "\n".join(rows) + "\n")
    report = check_dataset(tmp_path, PreprocessConfig(), folds=3)
    assert report.usable and report.patients == 24
    splits, _ = load_dataset(tmp_path, PreprocessConfig(), folds=3, seed=0)
    groups = splits.groups
    assert groups is not None and len(groups) == len(splits.pool)
    test_patients = {f"P{int(Path(name).name[1:].split('_')[0]):02d}" for name in splits.test_files}
    assert test_patients and not test_patients & set(groups.tolist())
    for seed in range(3):
        for fold in make_folds(splits.pool.labels.numpy(), 3, seed, groups=groups):
            assert not set(groups[fold.train_idx]) & set(groups[fold.val_idx])


def test_all_slices_of_a_volume_share_a_group(tmp_path):
    for c in ("a", "b"):
        for i in range(5):
            vol = np.random.default_rng(i).integers(0, 255, size=(3, 10, 10), dtype=np.uint8)
            write_image(tmp_path / c / f"v{i}.nii.gz", vol, spacing=(1.0, 1.0, 2.0))
    splits, _ = load_dataset(tmp_path, PreprocessConfig(slice="all"), folds=2, seed=0)
    assert len(splits.pool) + len(splits.test) == 30 and len(splits.test_files) == 2
    names, counts = np.unique(splits.groups, return_counts=True)
    assert (counts == 3).all() and len(names) == 8
    for fold in make_folds(splits.pool.labels.numpy(), 2, 0, groups=splits.groups):
        assert not set(splits.groups[fold.train_idx]) & set(splits.groups[fold.val_idx])
    first = read_slices(splits.groups[0], "all")
    assert len(first) == 3
