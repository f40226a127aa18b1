"""Find labelled images: class folders, Training/Testing or train/val/test layouts, MedMNIST .npz.

Nothing is decoded here (only extension-less files are sniffed for a DICOM preamble), so a
scan of 100,000 files takes seconds. Hidden entries and non-images are skipped and listed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mediscan.data.readers import (
    DICOM_SUFFIXES,
    NIFTI_SUFFIXES,
    ImageReadError,
    count_frames,
    looks_like_image,
    read_image,
    suffix_of,
)

SPLIT_NAMES = {"training": "train", "train": "train", "testing": "test", "test": "test",
               "val": "val", "valid": "val", "validation": "val"}
JUNK_NAMES = {"__MACOSX", "Thumbs.db", "desktop.ini"}
NPZ_SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Sample:
    """One labelled image: `path` is relative to the data set's root; `index` a slice/frame/row."""

    path: Path
    label: int
    split: str | None = None
    index: int | None = None

    @property
    def key(self) -> str:
        """Stable id across machines and copies: 'class/file.png' or 'file.nii.gz#12'."""
        text = self.path.as_posix()
        return text if self.index is None else f"{text}#{self.index}"


@dataclass(frozen=True)
class Skipped:
    """A file left out, and why."""

    path: Path
    reason: str


@dataclass
class ImageFolder:
    """The samples of a data set, its class names, and the files it skipped."""

    root: Path
    classes: list[str]
    samples: list[Sample]
    skipped: list[Skipped] = field(default_factory=list)
    arrays: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # .npz data sets

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def labels(self) -> np.ndarray:
        return np.array([s.label for s in self.samples], dtype=np.int64)

    @property
    def splits_present(self) -> set[str]:
        return {s.split for s in self.samples if s.split}

    def path_of(self, i: int) -> Path:
        """Absolute path of sample i's file."""
        return self.root / self.samples[i].path

    def read(self, i: int) -> np.ndarray:
        """Decode sample i (uint8 H x W or H x W x 3)."""
        sample = self.samples[i]
        if self.arrays:
            return npz_image(self.arrays[f"{sample.split}_images"][sample.index])
        return read_image(self.root / sample.path, index=sample.index)

    def subset(self, split: str) -> ImageFolder:
        """The samples of one split (train/val/test)."""
        return ImageFolder(self.root, self.classes, [s for s in self.samples if s.split == split],
                           self.skipped, self.arrays)

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.labels, minlength=len(self.classes))
        return {c: int(n) for c, n in zip(self.classes, counts)}


def npz_image(array: np.ndarray) -> np.ndarray:
    """A MedMNIST row as uint8 H x W or H x W x 3."""
    image = np.asarray(array)
    return image if image.dtype == np.uint8 else np.clip(image, 0, 255).astype(np.uint8)


def _is_hidden(name: str) -> bool:
    return name.startswith(".") or name in JUNK_NAMES


def _walk(folder: Path, skipped: list[Skipped]) -> list[Path]:
    """Image files below `folder`, sorted; hidden and non-image entries go to `skipped`."""
    found = []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        path = Path(entry.path)
        if _is_hidden(entry.name):
            skipped.append(Skipped(path, "hidden file or folder"))
        elif entry.is_dir():
            found.extend(_walk(path, skipped))
        elif looks_like_image(path):
            found.append(path)
        else:
            skipped.append(Skipped(path, f"not an image ({suffix_of(path) or 'no extension'})"))
    return found


def _volume_indices(path: Path, slices: str | int) -> list[int | None]:
    """Slice/frame indices to use from a multi-image file (None: a plain 2-D image)."""
    if suffix_of(path) not in NIFTI_SUFFIXES | DICOM_SUFFIXES and suffix_of(path) != "":
        return [None]
    try:
        count = count_frames(path)
    except Exception:  # unreadable: decoding will report it by name
        return [None]
    if count <= 1:
        return [None]
    if slices == "middle":
        return [count // 2]
    if slices == "all":
        return list(range(count))
    wanted = max(1, int(slices))
    return sorted({int(round(x)) for x in np.linspace(0, count - 1, wanted + 2)[1:-1]})


def _class_dirs(root: Path, skipped: list[Skipped]) -> list[Path]:
    dirs = []
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if _is_hidden(entry.name):
            skipped.append(Skipped(Path(entry.path), "hidden file or folder"))
        elif entry.is_dir():
            dirs.append(Path(entry.path))
        else:
            skipped.append(Skipped(Path(entry.path), "file outside a class folder"))
    return dirs


def _layout(root: Path, skipped: list[Skipped]) -> dict[str | None, list[Path]]:
    """{split or None: class folders}; a root whose sub-folders are all split names is split."""
    top = _class_dirs(root, skipped)
    if top and all(d.name.lower() in SPLIT_NAMES for d in top):
        return {SPLIT_NAMES[d.name.lower()]: _class_dirs(d, skipped) for d in top}
    return {None: top}


def _class_order(layout: dict[str | None, list[Path]], classes: list[str] | None) -> list[str]:
    found = sorted({d.name for dirs in layout.values() for d in dirs})
    if classes is None:
        return found
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise ValueError(f"class folders {unknown} are not among the given classes {classes}")
    return list(classes)


def scan_folder(root: str | Path, *, slices: str | int = "middle",
                classes: list[str] | None = None) -> ImageFolder:
    """Find every labelled image under `root` (see the module docstring for layouts)."""
    root = Path(root)
    if not root.exists():
        raise ValueError(f"{root}: no such folder. Expected DATA/<class>/images, "
                         "DATA/Training|Testing/<class>/images, or a MedMNIST .npz file.")
    if root.is_file() and root.suffix == ".npz":
        return scan_npz(root, classes=classes)
    skipped: list[Skipped] = []
    layout = _layout(root, skipped)
    names = _class_order(layout, classes)
    samples = []
    for split, dirs in layout.items():
        for class_dir in dirs:
            for path in _walk(class_dir, skipped):
                for index in _volume_indices(path, slices):
                    samples.append(Sample(path.relative_to(root), names.index(class_dir.name),
                                          split, index))
    if not names or not samples:
        raise ValueError(f"{root}: found no images in class folders. Expected DATA/<class>/"
                         "images (e.g. DATA/glioma/001.jpg) or DATA/Training/<class>/images.")
    return ImageFolder(root, names, samples, skipped)


def scan_npz(path: Path, *, classes: list[str] | None = None) -> ImageFolder:
    """A MedMNIST-style archive: train_images/train_labels, val_..., test_... arrays."""
    try:
        archive = np.load(path)
        arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError) as error:
        raise ImageReadError(path, f"not a readable .npz archive ({error})") from None
    samples = []
    for split in NPZ_SPLITS:
        if f"{split}_images" not in arrays:
            continue
        labels = np.asarray(arrays[f"{split}_labels"]).reshape(len(arrays[f"{split}_images"]), -1)
        samples += [Sample(Path(path.name), int(y[0]), split, i) for i, y in enumerate(labels)]
    if not samples:
        raise ValueError(f"{path}: no train_images/val_images/test_images arrays in the archive")
    count = 1 + max(s.label for s in samples)
    names = list(classes) if classes else [str(k) for k in range(count)]
    return ImageFolder(path.parent, names, samples, [], arrays)
