"""mediscan.data.folders: every layout, junk skipped and reported, volumes, .npz, clear errors."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers_images import make_class_folder, write_dicom, write_image, write_nifti

from mediscan.data.folders import (
    ImageFolder,
    Sample,
    Skipped,
    read_sample,
    scan_folder,
    slice_indices,
)
from mediscan.data.readers import ImageReadError

CLASSES = ["glioma", "meningioma", "notumor"]


def _keys(folder: ImageFolder) -> list[str]:
    return [s.key for s in folder.samples]


def _reasons(folder: ImageFolder, root: Path) -> dict[str, str]:
    return {s.path.relative_to(root).as_posix(): s.reason for s in folder.skipped}


def test_class_folders(tmp_path):
    make_class_folder(tmp_path, CLASSES, 2)
    folder = scan_folder(tmp_path)
    assert folder.root == tmp_path and folder.classes == CLASSES
    assert _keys(folder) == [f"{c}/{c}_{i:03d}.png" for c in CLASSES for i in range(2)]
    assert folder.labels.tolist() == [0, 0, 1, 1, 2, 2] and folder.labels.dtype == np.int64
    assert folder.splits_present == set() and folder.skipped == []
    assert folder.class_counts() == {"glioma": 2, "meningioma": 2, "notumor": 2}
    assert len(folder) == 6 and folder.read(3).shape == (32, 32)
    assert all(not s.path.is_absolute() for s in folder.samples)


@pytest.mark.parametrize("split_dirs, expected", [
    ({"Training": "train", "Testing": "test"}, {"train", "test"}),
    ({"train": "train", "val": "val", "test": "test"}, {"train", "val", "test"}),
    ({"TRAIN": "train", "Valid": "val", "Test": "test"}, {"train", "val", "test"}),
    ({"training": "train", "validation": "val"}, {"train", "val"}),
])
def test_split_layouts(tmp_path, split_dirs, expected):
    for k, name in enumerate(split_dirs):
        make_class_folder(tmp_path, ["no", "yes"], k + 1, split=name)
    folder = scan_folder(tmp_path)
    assert folder.classes == ["no", "yes"] and folder.splits_present == expected
    for name, split in split_dirs.items():
        part = folder.subset(split)
        assert {s.split for s in part.samples} == {split}
        assert all(s.key.startswith(f"{name}/") for s in part.samples)
    assert sum(len(folder.subset(s)) for s in expected) == len(folder)


def test_subset_of_a_missing_split_lists_the_present_ones(tmp_path):
    make_class_folder(tmp_path, ["a", "b"], 1, split="Training")
    with pytest.raises(ValueError, match=r"no 'val' split; splits here: \['train'\]"):
        scan_folder(tmp_path).subset("val")


def test_classes_missing_from_one_split_still_get_one_label(tmp_path):
    make_class_folder(tmp_path, ["a", "b", "c"], 1, split="train")
    make_class_folder(tmp_path, ["b"], 1, split="test")
    folder = scan_folder(tmp_path)
    assert folder.classes == ["a", "b", "c"]
    assert [s.label for s in folder.subset("test").samples] == [1]


def test_nested_folders_inside_a_class_are_searched(tmp_path):
    write_image(tmp_path / "cat" / "2021" / "jan" / "a.jpg", "RGB")
    write_image(tmp_path / "cat" / "b.png", "L")
    write_image(tmp_path / "dog" / "x" / "y" / "z" / "c.tif", "I;16")
    folder = scan_folder(tmp_path)
    assert _keys(folder) == ["cat/2021/jan/a.jpg", "cat/b.png", "dog/x/y/z/c.tif"]
    assert folder.labels.tolist() == [0, 0, 1]


def test_hidden_and_junk_are_skipped_and_reported(tmp_path):
    make_class_folder(tmp_path, ["a", "b"], 1)
    (tmp_path / "a" / ".DS_Store").write_bytes(b"\0\0")
    (tmp_path / "a" / "notes.txt").write_text("x")
    (tmp_path / "a" / "Thumbs.db").write_bytes(b"x")
    (tmp_path / "a" / "README").write_text("no extension, not DICOM")
    write_image(tmp_path / "a" / ".ipynb_checkpoints" / "a_000-checkpoint.png", "L")
    write_image(tmp_path / "__MACOSX" / "a" / "._a_000.png", "L")
    write_image(tmp_path / ".hidden_class" / "x.png", "L")
    (tmp_path / "labels.csv").write_text("file,label\n")
    folder = scan_folder(tmp_path)
    assert folder.classes == ["a", "b"] and len(folder) == 2
    assert _reasons(folder, tmp_path) == {
        ".hidden_class": "hidden",
        "__MACOSX": "hidden (macOS archive metadata)",
        "labels.csv": "not in a class folder",
        "a/.DS_Store": "hidden",
        "a/.ipynb_checkpoints": "hidden",
        "a/README": "not an image (no extension)",
        "a/Thumbs.db": "not an image (.db)",
        "a/notes.txt": "not an image (.txt)",
    }


def test_skipped_entries_follow_their_split(tmp_path):
    make_class_folder(tmp_path, ["a"], 1, split="Training")
    make_class_folder(tmp_path, ["a"], 1, split="Testing")
    (tmp_path / "Testing" / "a" / "junk.txt").write_text("x")
    (tmp_path / "notes").mkdir()
    folder = scan_folder(tmp_path)
    assert _reasons(folder, tmp_path)["notes"].startswith("not a split folder")
    assert [s.path.name for s in folder.subset("test").skipped] == ["junk.txt"]
    assert folder.subset("train").skipped == []


def test_extension_less_dicom_is_found_other_files_are_not(tmp_path):
    write_dicom(tmp_path / "ct" / "IM0001", np.zeros((4, 4), np.uint16))
    write_dicom(tmp_path / "ct" / "1.2.840.10008.99", np.zeros((4, 4), np.uint16))
    write_image(tmp_path / "xray" / "a.png", "L")
    folder = scan_folder(tmp_path)
    assert _keys(folder) == ["ct/1.2.840.10008.99", "ct/IM0001", "xray/a.png"]


def test_classes_argument_fixes_the_order(tmp_path):
    make_class_folder(tmp_path, ["a", "b"], 1)
    folder = scan_folder(tmp_path, classes=["b", "a", "c"])
    assert folder.classes == ["b", "a", "c"]
    assert {s.key: s.label for s in folder.samples} == {"a/a_000.png": 1, "b/b_000.png": 0}
    assert folder.class_counts() == {"b": 1, "a": 1, "c": 0}


@pytest.mark.parametrize("classes, message", [
    (["a"], r"class folder\(s\) \['b'\] are not among the given classes \['a'\]"),
    (["a", "b", "a"], "duplicates"),
])
def test_classes_argument_errors(tmp_path, classes, message):
    make_class_folder(tmp_path, ["a", "b"], 1)
    with pytest.raises(ValueError, match=message):
        scan_folder(tmp_path, classes=classes)


def test_keys_are_stable_across_copies(tmp_path):
    make_class_folder(tmp_path / "one", CLASSES, 2)
    write_nifti(tmp_path / "one" / "glioma" / "vol.nii.gz", np.zeros((4, 4, 5), np.float32))
    shutil.copytree(tmp_path / "one", tmp_path / "elsewhere" / "two")
    first = scan_folder(tmp_path / "one", slices="all")
    second = scan_folder(tmp_path / "elsewhere" / "two", slices="all")
    assert _keys(first) == _keys(second)
    assert "glioma/vol.nii.gz#4" in _keys(first)


# --- volumes -----------------------------------------------------------------------------------

@pytest.mark.parametrize("slices, indices", [
    ("middle", [None]),
    ("all", [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]),
    (1, [5]),
    (2, [2, 7]),
    (3, [1, 5, 8]),
    (50, list(range(10))),
])
@pytest.mark.parametrize("kind", ["nii", "nii.gz", "dcm"])
def test_volumes_expand_per_slices(tmp_path, slices, indices, kind):
    frames = np.zeros((10, 4, 10), np.uint16)  # frame k: only column k is bright
    for k in range(10):
        frames[k, :, k] = 100
    if kind == "dcm":
        write_dicom(tmp_path / "mri" / "cine.dcm", frames)
    else:
        write_nifti(tmp_path / "mri" / f"vol.{kind}", np.moveaxis(frames, 0, -1))
    write_image(tmp_path / "mri" / "a_plain.png", "L")  # 2-D images always give one sample
    folder = scan_folder(tmp_path, slices=slices)
    assert folder.samples[0].key == "mri/a_plain.png" and folder.samples[0].index is None
    assert [s.index for s in folder.samples[1:]] == indices
    for i, sample in enumerate(folder.samples[1:], start=1):
        k = 5 if sample.index is None else sample.index  # None reads the middle slice
        image = folder.read(i)
        bright = image[:, k] if kind == "dcm" else image[9 - k, :]  # NIfTI slices are rot90'd
        assert (bright == 255).all() and image.sum() == 255 * bright.size


def test_volume_slices_hold_their_own_values(tmp_path):
    volume = np.zeros((3, 3, 4), np.float32)
    for k in range(4):
        volume[k % 3, 0, k] = 1.0  # a different bright voxel in each slice
    write_nifti(tmp_path / "a" / "v.nii", volume)
    write_image(tmp_path / "b" / "x.png", "L")
    folder = scan_folder(tmp_path, slices="all")
    images = [folder.read(i) for i, s in enumerate(folder.samples) if s.index is not None]
    assert len(images) == 4
    for k, image in enumerate(images):
        np.testing.assert_array_equal(image, np.rot90(volume[:, :, k] * 255).astype(np.uint8))


def test_unreadable_volume_header_is_skipped_with_its_reason(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "broken.nii.gz").write_bytes(b"not gzip at all")
    write_image(tmp_path / "a" / "ok.png", "L")
    folder = scan_folder(tmp_path, slices="all")
    assert _keys(folder) == ["a/ok.png"]
    assert [s.path.name for s in folder.skipped] == ["broken.nii.gz"]
    # with the default "middle" nothing is opened: the failure shows up when decoding
    lazy = scan_folder(tmp_path)
    assert len(lazy) == 2
    with pytest.raises(ImageReadError, match="broken.nii.gz"):
        lazy.read(0)


@pytest.mark.parametrize("count, slices, expected", [
    (9, "middle", [4]), (9, "all", list(range(9))), (9, 1, [4]), (9, 3, [1, 4, 7]),
    (4, 4, [0, 1, 2, 3]), (4, 9, [0, 1, 2, 3]), (100, 4, [12, 37, 62, 87]),
])
def test_slice_indices(count, slices, expected):
    assert slice_indices(count, slices) == expected


@pytest.mark.parametrize("slices", ["first", 0, -2, 1.5, True])
def test_bad_slices_value(tmp_path, slices):
    make_class_folder(tmp_path, ["a"], 1)
    with pytest.raises(ValueError, match="slices must be"):
        scan_folder(tmp_path, slices=slices)


# --- MedMNIST .npz -----------------------------------------------------------------------------

def _medmnist(path: Path, *, colour: bool = False, label_shape: str = "column",
              compressed: bool = False) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 6), ("val", 2), ("test", 3)):
        shape = (n, 28, 28, 3) if colour else (n, 28, 28)
        labels = rng.integers(0, 4, n)
        labels[0] = 3
        arrays[f"{split}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
        arrays[f"{split}_labels"] = labels[:, None] if label_shape == "column" else labels
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    return arrays


@pytest.mark.parametrize("colour", [False, True])
@pytest.mark.parametrize("compressed", [False, True])
@pytest.mark.parametrize("label_shape", ["column", "flat"])
def test_npz_dataset(tmp_path, colour, compressed, label_shape):
    path = tmp_path / "organmnist.npz"
    arrays = _medmnist(path, colour=colour, compressed=compressed, label_shape=label_shape)
    folder = scan_folder(path)
    assert folder.root == tmp_path and folder.classes == ["0", "1", "2", "3"]
    assert len(folder) == 11 and folder.splits_present == {"train", "val", "test"}
    assert _keys(folder) == [f"organmnist.npz#{i}" for i in range(11)]  # unique across splits
    expected_labels = np.concatenate([arrays[f"{s}_labels"].ravel() for s in ("train", "val", "test")])
    assert folder.labels.tolist() == expected_labels.tolist()
    test = folder.subset("test")
    for j, sample in enumerate(test.samples):
        image = read_sample(test.root, sample)
        assert image.dtype == np.uint8 and image.shape == ((28, 28, 3) if colour else (28, 28))
        np.testing.assert_array_equal(image, arrays["test_images"][j])
    assert all(folder.path_of(i) == path for i in range(len(folder)))


def test_npz_with_class_names(tmp_path):
    _medmnist(tmp_path / "d.npz")
    names = ["adrenal", "bladder", "femur", "heart"]
    assert scan_folder(tmp_path / "d.npz", classes=names).classes == names
    with pytest.raises(ValueError, match="needs 4 distinct names"):
        scan_folder(tmp_path / "d.npz", classes=["a", "b"])


def test_npz_errors(tmp_path):
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match="no train_images/val_images/test_images"):
        scan_folder(tmp_path / "other.npz")
    np.savez(tmp_path / "multi.npz", train_images=np.zeros((2, 8, 8), np.uint8),
             train_labels=np.zeros((2, 14), np.uint8))
    with pytest.raises(ValueError, match="multi-label"):
        scan_folder(tmp_path / "multi.npz")
    np.savez(tmp_path / "vol.npz", train_images=np.zeros((2, 8, 8, 8), np.uint8),
             train_labels=np.zeros(2, np.uint8))
    with pytest.raises(ValueError, match=r"expected \(N, H, W\)"):
        scan_folder(tmp_path / "vol.npz")
    (tmp_path / "junk.npz").write_text("not a zip")
    with pytest.raises(ValueError, match="not a readable .npz"):
        scan_folder(tmp_path / "junk.npz")


def test_folder_holding_only_an_npz_points_at_it(tmp_path):
    _medmnist(tmp_path / "pathmnist.npz")
    with pytest.raises(ValueError, match=r"found pathmnist.npz: pass the .npz file itself"):
        scan_folder(tmp_path)


# --- errors ------------------------------------------------------------------------------------

def _empty_class_folders(root: Path) -> None:
    (root / "a").mkdir()
    (root / "b").mkdir()
    (root / "b" / "notes.txt").write_text("x")


ROOT_ERRORS = [  # id, build the root, phrase
    ("missing", lambda root: None, "no such folder"),
    ("empty", lambda root: root.mkdir(), "no class folders found"),
    ("files only", lambda root: root.mkdir() or write_image(root / "x.png", "L"),
     "no class folders found"),
    ("no images", lambda root: root.mkdir() or _empty_class_folders(root),
     r"no images in 2 class folder\(s\) \(1 entries skipped, e.g. notes.txt: not an image"),
    ("a file", lambda root: root.write_text("x"), "is a file"),
]


@pytest.mark.parametrize("build, phrase", [c[1:] for c in ROOT_ERRORS],
                         ids=[c[0] for c in ROOT_ERRORS])
def test_root_errors_name_the_path_and_the_layout(tmp_path, build, phrase):
    root = tmp_path / "data"
    build(root)
    with pytest.raises(ValueError, match=phrase) as caught:
        scan_folder(root)
    message = str(caught.value)
    assert message.startswith(f"{root}: ") and "ROOT/<class>/<images>" in message


@pytest.mark.skipif(os.name != "posix", reason="symbolic links")
def test_symlink_loop_is_skipped(tmp_path):
    make_class_folder(tmp_path, ["a"], 1)
    os.symlink(tmp_path / "a", tmp_path / "a" / "again")
    folder = scan_folder(tmp_path)
    assert len(folder) == 1
    assert _reasons(folder, tmp_path) == {"a/again": "symbolic link loop"}


def test_sample_key_and_records():
    assert Sample(Path("a/b.png"), 0).key == "a/b.png"
    assert Sample(Path("ct/vol.nii.gz"), 1, "train", 12).key == "ct/vol.nii.gz#12"
    with pytest.raises(AttributeError):
        Sample(Path("a.png"), 0).label = 2  # frozen
    assert Skipped(Path("x.txt"), "not an image (.txt)").reason == "not an image (.txt)"
