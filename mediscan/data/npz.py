"""MedMNIST-style .npz data sets: train_images/train_labels, val_..., test_... arrays.

Rows are numbered across the train, val and test arrays in that order (`Sample.index`); their
splits are the run's. Scanning reads only the labels and the image arrays' headers; a row is read
from a memory map when the archive stores the array uncompressed."""

from __future__ import annotations

import functools
import struct
import zipfile
from pathlib import Path

import numpy as np

from mediscan.data.readers import ImageReadError, to_uint8

NPZ_SPLITS = ("train", "val", "test")
LAYOUT = ("expected a MedMNIST-style .npz file with train_images and train_labels arrays "
          "(val_ and test_ ones optional)")


def npz_rows(path: Path, classes: list[str] | None) -> tuple[list[str], list[tuple[int, str]]]:
    """(class names, (label, split) of every row) of an archive; rows are numbered across train,
    val and test in that order. Nothing but the labels and the arrays' headers is read."""
    parts = _npz_parts(str(path), _stamp(path))
    labels = []
    with np.load(path, allow_pickle=False) as archive:
        for split, (_, count) in parts.items():
            key = f"{split}_labels"
            found = np.asarray(archive[key]) if key in archive.files else None
            labels.append(_npz_labels(path, split, found, count))
    all_labels = np.concatenate(labels)
    names = _npz_classes(path, int(all_labels.max()) + 1 if all_labels.size else 0, classes)
    splits = [split for split, (_, count) in parts.items() for _ in range(count)]
    if not splits:
        raise ValueError(f"{path}: the archive's image arrays are empty; {LAYOUT}")
    return names, [(int(y), split) for y, split in zip(all_labels, splits)]


def _npz_labels(path: Path, split: str, labels: np.ndarray | None, count: int) -> np.ndarray:
    """Integer labels of one split, shaped (N,) or (N, 1) in the archive."""
    if labels is None:
        raise ValueError(f"{path}: {split}_images has no {split}_labels array next to it")
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim == 2 and labels.shape[1] > 1:
        raise ValueError(f"{path}: multi-label data ({labels.shape[1]} labels per image in {split}_labels) "
                         "is not supported yet: mediscan trains one class per image; use a single-label "
                         "set, or keep one column as the class (e.g. np.savez with labels[:, [k]])")
    if labels.ndim != 1 or len(labels) != count:
        raise ValueError(f"{path}: {split}_labels has shape {labels.shape}; expected ({count},) "
                         f"or ({count}, 1) (one class per image; multi-label sets are not supported)")
    if labels.size and (not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0):
        raise ValueError(f"{path}: {split}_labels must be non-negative integers")
    return labels.astype(np.int64)


def _npz_classes(path: Path, count: int, classes: list[str] | None) -> list[str]:
    if classes is None:
        return [str(k) for k in range(count)]
    if len(classes) < count or len(set(classes)) != len(classes):
        raise ValueError(f"{path}: labels go up to {count - 1}, so `classes` needs {count} "
                         f"distinct names; got {list(classes)}")
    return list(classes)


def _stamp(path: Path) -> tuple[int, int]:
    info = path.stat()
    return info.st_mtime_ns, info.st_size


@functools.lru_cache(maxsize=16)
def _npz_parts(path: str, stamp: tuple[int, int]) -> dict[str, tuple[int, int]]:
    """{split: (first row, rows)} from the arrays' headers (no image data is read)."""
    try:
        with zipfile.ZipFile(path) as archive:
            shapes = {name[:-4]: _npy_header(archive, name)[0] for name in archive.namelist()
                      if name.endswith("_images.npy")}
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise ValueError(f"{path}: not a readable .npz archive ({error})") from error
    parts, start = {}, 0
    for split in NPZ_SPLITS:
        shape = shapes.get(f"{split}_images")
        if shape is None:
            continue
        if not (len(shape) == 3 or (len(shape) == 4 and shape[3] in (1, 3))):
            raise ValueError(f"{path}: {split}_images has shape {shape}; expected (N, H, W) or "
                             "(N, H, W, 3) 2-D images")
        parts[split], start = (start, shape[0]), start + shape[0]
    if not parts:
        raise ValueError(f"{path}: no train_images/val_images/test_images arrays (found "
                         f"{sorted(shapes) or 'none'}); {LAYOUT}")
    return parts


def _npy_header(archive: zipfile.ZipFile, name: str) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """(shape, fortran order, dtype, header length) of a .npy member."""
    with archive.open(name) as member:
        version = np.lib.format.read_magic(member)
        reader = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                  else np.lib.format.read_array_header_2_0)
        shape, fortran, dtype = reader(member)
        return shape, fortran, dtype, member.tell()


@functools.lru_cache(maxsize=8)
def _npz_array(path: str, name: str, stamp: tuple[int, int]) -> np.ndarray:
    """One array of an archive: memory-mapped when stored uncompressed, else loaded once."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(f"{name}.npy")
        shape, fortran, dtype, header = _npy_header(archive, info.filename)
    if dtype.hasobject:
        raise ValueError(f"{path}: {name} holds Python objects; only numeric arrays are read")
    if info.compress_type != zipfile.ZIP_STORED:
        with np.load(path, allow_pickle=False) as data:
            return data[name]
    with open(path, "rb") as raw:  # data start: local file header (30 bytes + name + extra)
        raw.seek(info.header_offset + 26)
        name_length, extra_length = struct.unpack("<HH", raw.read(4))
    offset = info.header_offset + 30 + name_length + extra_length + header
    return np.memmap(path, dtype=dtype, mode="r", shape=shape, offset=offset,
                     order="F" if fortran else "C")


def read_npz_row(path: Path, index: int | None) -> np.ndarray:
    """Row `index` (numbered across train, val, test) of an archive as uint8 HxW or HxWx3."""
    name = f"{path}#{index}"
    try:
        stamp = _stamp(path)
        for split, (start, count) in _npz_parts(str(path), stamp).items():
            if index is not None and start <= index < start + count:
                image = np.asarray(_npz_array(str(path), f"{split}_images", stamp)[index - start])
                return to_uint8(image[..., 0] if image.ndim == 3 and image.shape[2] == 1 else image)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
        raise ImageReadError(name, f"could not be read from the archive ({error})") from error
    raise ImageReadError(name, "no such row in the archive (the data changed since the scan?)")
