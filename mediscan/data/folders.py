"""Find labelled images: class folders, Training/Testing or train/val/test layouts, MedMNIST .npz.

Layouts (folder names of splits are case-insensitive):

    ROOT/<class>/**/image                    split None
    ROOT/{Training,Testing}/<class>/**/image -> "train" / "test"
    ROOT/{train,val|valid|validation,test}/<class>/**/image
    data.npz with train_images/train_labels, val_..., test_... arrays (MedMNIST)

`Sample.path` is relative to `ImageFolder.root`, so `Sample.key` ("glioma/001.jpg",
"ct/vol.nii.gz#12") is the same on every machine and copy of the data. For an .npz data set the
root is the archive's folder, `Sample.path` the archive's name and `Sample.index` the row in the
train, val and test arrays taken in that order ("organmnist.npz#1234").

Nothing is decoded while scanning: entries are listed with os.scandir, extension-less files are
sniffed for the DICOM preamble, and only with `slices="all"` or a number are volume headers read.
Hidden entries, __MACOSX and non-images are skipped and listed in `ImageFolder.skipped`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mediscan.data.npz import npz_rows, read_npz_row
from mediscan.data.readers import (
    IMAGE_SUFFIXES,
    VOLUME_SUFFIXES,
    ImageReadError,
    count_frames,
    looks_like_image,
    may_be_dicom_name,
    read_image,
    suffix_of,
)

SPLIT_NAMES = {"training": "train", "train": "train", "testing": "test", "test": "test",
               "val": "val", "valid": "val", "validation": "val"}
LAYOUTS = ("expected ROOT/<class>/<images>, ROOT/Training|Testing/<class>/<images>, "
           "ROOT/train|val|test/<class>/<images>, or a MedMNIST-style .npz file")


@dataclass(frozen=True)
class Sample:
    """One labelled image: `path` relative to the data set root; `index` a frame, slice or row."""

    path: Path
    label: int
    split: str | None = None
    index: int | None = None

    @property
    def key(self) -> str:
        """Stable id across machines and copies: 'class/file.png' or 'vol.nii.gz#12'."""
        text = self.path.as_posix()
        return text if self.index is None else f"{text}#{self.index}"

    @classmethod
    def from_key(cls, key: str, label: int = 0) -> Sample:
        """The sample a `key` names (the inverse of `.key`; the label is not part of it)."""
        name, _, index = key.partition("#")
        return cls(Path(name), label, index=int(index) if index.isdigit() else None)


@dataclass(frozen=True)
class Skipped:
    """A file or folder left out, and why."""

    path: Path
    reason: str


@dataclass
class ImageFolder:
    """The samples of a data set (paths relative to `root`), its classes, and what was skipped."""

    root: Path
    classes: list[str]
    samples: list[Sample]
    skipped: list[Skipped] = field(default_factory=list)
    archive: Path | None = None  # the .npz file the samples come from (`root` is its folder)

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def source(self) -> Path:
        """What `scan_folder` was given and reads again: the folder, or the .npz archive."""
        return self.archive or self.root

    @property
    def labels(self) -> np.ndarray:
        """Class index of every sample (int64)."""
        return np.array([s.label for s in self.samples], dtype=np.int64)

    @property
    def splits_present(self) -> set[str]:
        """Splits given by the layout ("train", "val", "test"); empty for plain class folders."""
        return {s.split for s in self.samples if s.split is not None}

    def path_of(self, i: int) -> Path:
        """The file sample i is read from."""
        return self.root / self.samples[i].path

    def read(self, i: int) -> np.ndarray:
        """Decode sample i: uint8 HxW or HxWx3; raises ImageReadError."""
        return read_sample(self.root, self.samples[i])

    def subset(self, split: str) -> ImageFolder:
        """The samples (and skipped entries) of one split given by the layout."""
        if split not in self.splits_present:
            raise ValueError(f"{self.root}: no {split!r} split; splits here: "
                             f"{sorted(self.splits_present) or 'none (plain class folders)'}")
        return ImageFolder(self.root, self.classes, [s for s in self.samples if s.split == split],
                           [s for s in self.skipped if self._split_of(s.path) == split], self.archive)

    def class_counts(self) -> dict[str, int]:
        """Samples per class, in class order (zeros included)."""
        counts = np.bincount(self.labels, minlength=len(self.classes))
        return {name: int(n) for name, n in zip(self.classes, counts)}

    def _split_of(self, path: Path) -> str | None:
        try:
            top = Path(path).relative_to(self.root).parts[0]
        except (ValueError, IndexError):
            return None
        return SPLIT_NAMES.get(top.lower())


def read_sample(root: Path, sample: Sample) -> np.ndarray:
    """Decode one sample of a data set rooted at `root` (files, volumes and .npz rows)."""
    path = Path(root) / sample.path
    if suffix_of(path) == ".npz":
        return read_npz_row(path, sample.index)
    return read_image(path, index=sample.index)


def scan_folder(root: str | os.PathLike[str], *, slices: str | int = "middle",
                classes: list[str] | None = None) -> ImageFolder:
    """Find every labelled image under `root` (layouts in the module docstring).

    `slices` picks the 2-D images of NIfTI volumes and multi-frame DICOMs: "middle" (one, read
    at the middle slice), "all", or a number N of evenly spaced slices (bin centres, so N=1 is
    the middle one). `classes` fixes the class order; folder names not in it are an error.
    """
    root = Path(root)
    _check_slices(slices)
    if root.is_file() and suffix_of(root) == ".npz":
        return _scan_npz(root, classes)
    if not root.is_dir():
        what = "is a file, not a folder or .npz file" if root.exists() else "no such folder"
        raise ValueError(f"{root}: {what}; {LAYOUTS}")
    skipped: list[Skipped] = []
    class_dirs = _class_dirs(root, skipped)
    if not class_dirs:
        raise ValueError(f"{root}: no class folders found{_npz_hint(root)}; {LAYOUTS}")
    names = _class_order(root, [name for name, *_ in class_dirs], classes)
    label_of = {name: i for i, name in enumerate(names)}
    samples: list[Sample] = []
    for name, split, directory, rel in class_dirs:
        for full, file_rel, volume in _images(directory, rel, skipped, frozenset()):
            samples += _expand(full, file_rel, label_of[name], split, volume, slices, skipped)
    if not samples:
        raise ValueError(f"{root}: no images in {len(class_dirs)} class folder(s) "
                         f"({len(skipped)} entries skipped{_examples(skipped)}); {LAYOUTS}")
    return ImageFolder(root, names, samples, skipped)


# --- folders ----------------------------------------------------------------------------------

def _check_slices(slices: str | int) -> None:
    valid = slices in ("middle", "all") or (isinstance(slices, int) and not isinstance(slices, bool)
                                             and slices >= 1)
    if not valid:
        raise ValueError(f"slices must be 'middle', 'all' or a positive number, got {slices!r}")


def _listdir(directory: str, skipped: list[Skipped]) -> list[os.DirEntry[str]]:
    """Visible entries sorted by name; hidden ones and macOS archive debris go to `skipped`."""
    entries = []
    for entry in sorted(os.scandir(directory), key=lambda e: e.name):
        if entry.name.startswith("."):
            skipped.append(Skipped(Path(entry.path), "hidden"))
        elif entry.name == "__MACOSX":
            skipped.append(Skipped(Path(entry.path), "hidden (macOS archive metadata)"))
        else:
            entries.append(entry)
    return entries


def _class_dirs(root: Path, skipped: list[Skipped]) -> list[tuple[str, str | None, str, str]]:
    """(class name, split, folder, folder relative to root) for each class folder."""
    top = _listdir(str(root), skipped)
    if not any(e.name.lower() in SPLIT_NAMES and e.is_dir() for e in top):
        return [(e.name, None, e.path, e.name) for e in _dirs_only(top, skipped)]
    found = []
    for entry in _dirs_only(top, skipped):
        split = SPLIT_NAMES.get(entry.name.lower())
        if split is None:
            skipped.append(Skipped(Path(entry.path), "not a split folder (expected Training/"
                                   "Testing or train/val/test next to the other split folders)"))
            continue
        for class_dir in _dirs_only(_listdir(entry.path, skipped), skipped):
            found.append((class_dir.name, split, class_dir.path, f"{entry.name}/{class_dir.name}"))
    return found


def _dirs_only(entries: list[os.DirEntry[str]], skipped: list[Skipped]) -> list[os.DirEntry[str]]:
    """The folders among `entries`; files at this level are outside any class folder."""
    dirs = []
    for entry in entries:
        if entry.is_dir():
            dirs.append(entry)
        else:
            skipped.append(Skipped(Path(entry.path), "not in a class folder"))
    return dirs


def _class_order(root: Path, found: list[str], classes: list[str] | None) -> list[str]:
    """Sorted folder names, or the given order (which must cover every folder)."""
    if classes is None:
        return sorted(set(found))
    classes = list(classes)
    if len(set(classes)) != len(classes):
        raise ValueError(f"classes {classes} contain duplicates")
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise ValueError(f"{root}: class folder(s) {unknown} are not among the given classes "
                         f"{classes}")
    return classes


def _images(directory: str, rel: str, skipped: list[Skipped],
            ancestors: frozenset[tuple[int, int]]) -> Iterator[tuple[str, str, bool]]:
    """(file, file relative to root, may hold several images) below `directory`, recursively."""
    info = os.stat(directory)
    here = ancestors | {(info.st_dev, info.st_ino)}
    for entry in _listdir(directory, skipped):
        entry_rel = f"{rel}/{entry.name}"
        if entry.is_dir():
            target = entry.stat()
            if (target.st_dev, target.st_ino) in here:
                skipped.append(Skipped(Path(entry.path), "symbolic link loop"))
            else:
                yield from _images(entry.path, entry_rel, skipped, here)
        elif not entry.is_file():
            skipped.append(Skipped(Path(entry.path), "not a regular file (broken link?)"))
        elif (suffix := suffix_of(entry.name)) in IMAGE_SUFFIXES:
            yield entry.path, entry_rel, suffix in VOLUME_SUFFIXES
        elif may_be_dicom_name(entry.name) and looks_like_image(entry.path):
            yield entry.path, entry_rel, True
        else:
            skipped.append(Skipped(Path(entry.path), f"not an image ({suffix or 'no extension'})"))


def _expand(full: str, rel: str, label: int, split: str | None, volume: bool,
            slices: str | int, skipped: list[Skipped]) -> list[Sample]:
    """One sample per 2-D image of a file: volumes give the slices `slices` asks for."""
    if not volume or slices == "middle":
        return [Sample(Path(rel), label, split)]
    try:
        count = count_frames(full)
    except ImageReadError as error:
        skipped.append(Skipped(Path(full), error.reason))
        return []
    if count <= 1:
        return [Sample(Path(rel), label, split)]
    return [Sample(Path(rel), label, split, i) for i in slice_indices(count, slices)]


def slice_indices(count: int, slices: str | int) -> list[int]:
    """Which of `count` slices to use: the middle one, all, or N evenly spaced (bin centres)."""
    if slices == "middle":
        return [count // 2]
    if slices == "all" or int(slices) >= count:
        return list(range(count))
    n = int(slices)
    return [int((k + 0.5) * count / n) for k in range(n)]


def _examples(skipped: list[Skipped]) -> str:
    return "" if not skipped else ", e.g. " + "; ".join(
        f"{s.path.name}: {s.reason}" for s in skipped[:3])


def _npz_hint(root: Path) -> str:
    archives = sorted(p.name for p in root.glob("*.npz"))
    return f" (found {archives[0]}: pass the .npz file itself)" if archives else ""


def _scan_npz(path: Path, classes: list[str] | None) -> ImageFolder:
    """Samples of a MedMNIST-style archive; rows are numbered across train, val and test."""
    names, rows = npz_rows(path, classes)
    samples = [Sample(Path(path.name), label, split, i) for i, (label, split) in enumerate(rows)]
    return ImageFolder(path.parent, names, samples, [], archive=path)
