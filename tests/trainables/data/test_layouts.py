"""Dataset layouts: class folders, CSV manifests (root containment, missing files, patients),
and the fixed test split (stratified, seeded, never splitting a patient)."""

from __future__ import annotations

import numpy as np
import pytest

from gantune.trainables.data.datasets import DatasetError
from gantune.trainables.data.io import write_image
from gantune.trainables.data.layouts import discover, export_medmnist_to_folders, split_test


def img(path, value=0):
    write_image(path, np.full((8, 8), value, np.uint8) + np.arange(8, dtype=np.uint8))
    return path


def errors(layout):
    return [str(i) for i in layout.issues if i.severity == "error"]


def test_class_folders_skip_masks_sidecars_and_flag_strays(tmp_path):
    img(tmp_path / "sick" / "a.mha")
    img(tmp_path / "sick" / "a_mask.mha")
    img(tmp_path / "sick" / "patient7" / "b.nii.gz")
    write_image(tmp_path / "healthy" / "c.mhd", np.zeros((8, 8), np.uint8))  # writes c.raw too
    (tmp_path / "healthy" / "notes.txt").write_text("hi")
    (tmp_path / "healthy" / ".DS_Store").write_text("")
    layout = discover(tmp_path)
    assert layout.kind == "folders" and layout.class_names == ("healthy", "sick")
    assert [(s.path.name, s.label) for s in layout.samples] == [("c.mhd", 0), ("a.mha", 1), ("b.nii.gz", 1)]
    assert layout.patients is None
    [warning] = layout.issues
    assert (
        warning.severity == "warning" and warning.path.endswith("notes.txt") and "not an image file" in warning.reason
    )


def test_empty_class_folder_and_single_class(tmp_path):
    img(tmp_path / "sick" / "a.mha")
    (tmp_path / "healthy").mkdir()
    [msg] = errors(discover(tmp_path))
    assert msg.startswith(str(tmp_path / "healthy")) and "class folder holds no images" in msg
    (tmp_path / "healthy").rmdir()
    [msg] = errors(discover(tmp_path))
    assert "found 1 class folder(s); a classifier needs >= 2" in msg


def write_manifest(root, rows, header="path,label,patient_id"):
    (root / "manifest.csv").write_text("\n".join([header, *rows]) + "\n")
    return root / "manifest.csv"


def test_manifest_relative_paths_and_patients(tmp_path):
    img(tmp_path / "imgs" / "1.mha")
    img(tmp_path / "imgs" / "2.mha")
    img(tmp_path / "imgs" / "3.mha")
    manifest = write_manifest(tmp_path, ["imgs/1.mha,sick,p1", "imgs/2.mha,healthy,p1", "./imgs/../imgs/3.mha,sick,p2"])
    for arg in (tmp_path, manifest):  # the folder holding manifest.csv, or the file itself
        layout = discover(arg)
        assert layout.kind == "manifest" and layout.class_names == ("healthy", "sick")
        assert [s.label for s in layout.samples] == [1, 0, 1]
        assert layout.patients.tolist() == ["p1", "p1", "p2"]
        assert not layout.issues and layout.index_files == (manifest,)


def test_manifest_rejects_paths_outside_root_and_missing_files(tmp_path):
    root = tmp_path / "ds"
    img(tmp_path / "outside.mha")
    img(root / "a.mha")
    img(root / "b.mha")
    write_manifest(root, [
        "a.mha,sick,p1",
        "b.mha,healthy,p2",
        "../outside.mha,sick,p3",
        f"{tmp_path / 'outside.mha'},sick,p3",
        "gone.mha,healthy,p4",
        "ghost1.mha,unknown,p5",
        "ghost2.mha,unknown,p6",
        "a.mha,sick,p1",
        "b.mha,healthy,",
    ])  # fmt: skip
    msgs = errors(discover(root))
    manifest = root / "manifest.csv"
    assert f"{manifest}:4: path '../outside.mha' is outside the dataset root {root}" in msgs[0]
    assert msgs[1].startswith(f"{manifest}:5: path '{tmp_path / 'outside.mha'}' is outside the dataset root")
    assert f"{manifest}:6: path 'gone.mha' (label 'healthy') matches no file" in msgs[2]
    assert f"{manifest}:7: path 'ghost1.mha' (label 'unknown') matches no file" in msgs[3]
    assert f"{manifest}:9: path 'a.mha' is listed twice" in msgs[5]
    assert f"{manifest}:10: empty 'patient_id'" in msgs[6]
    assert (
        msgs[7] == f"{manifest}: label 'unknown' matches no file (all 2 of its rows point to missing or rejected paths)"
    )
    assert len(msgs) == 8


def test_manifest_header_errors(tmp_path):
    with pytest.raises(
        DatasetError,
        match=r"manifest\.csv: a manifest needs a header 'path,label\[,patient_id\]'.*missing columns \['label'\]",
    ):
        discover(write_manifest(tmp_path, ["a.mha,x"], header="path,class"))
    with pytest.raises(DatasetError, match="no rows"):
        discover(write_manifest(tmp_path, [], header="path,label"))
    with pytest.raises(DatasetError, match="dataset not found"):
        discover(tmp_path / "missing")


def test_split_test_is_stratified_seeded_and_deterministic():
    labels = np.array([0] * 30 + [1] * 70)
    pool, test = split_test(labels, None, seed=3)
    assert len(test) == 20 and np.bincount(labels[test]).tolist() == [6, 14]
    assert np.array_equal(np.union1d(pool, test), np.arange(100)) and not np.intersect1d(pool, test).size
    again = split_test(labels, None, seed=3)
    assert np.array_equal(again[1], test)
    assert not np.array_equal(split_test(labels, None, seed=4)[1], test)


def test_split_test_never_splits_a_patient():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(40), 3).astype(str)  # 40 patients, 3 images each
    labels = np.repeat(rng.integers(0, 2, size=40), 3)
    for seed in range(5):
        pool, test = split_test(labels, groups, seed=seed)
        assert not set(groups[pool]) & set(groups[test])
        assert 0.1 < len(test) / len(labels) < 0.3


def test_export_breastmnist_to_class_folders(tmp_path, breast_npz):
    root = export_medmnist_to_folders(breast_npz, tmp_path / "t", per_class=5, seed=1)
    layout = discover(root)
    assert layout.class_names == ("malignant", "normal_benign")
    assert np.bincount(layout.labels).tolist() == [5, 5] and not layout.issues
    train = np.load(breast_npz)
    index = int(layout.samples[0].path.name.split("_")[1].split(".")[0])
    from gantune.trainables.data.io import read_slices

    np.testing.assert_array_equal(read_slices(layout.samples[0].path)[0].array[0], train["train_images"][index])
    assert int(train["train_labels"][index, 0]) == layout.samples[0].label
