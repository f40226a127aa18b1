"""Label-irrelevant properties of each image (size, format, colour, border, text, framing, intensity).

A classifier learns whatever separates the classes; when the classes of a data set differ in
image size, file type, border colour, burned-in text, framing or MRI contrast, a network can
score well without looking at the disease, and fails on other hospitals' scans. For every
image `measure` computes, on a copy downscaled to at most `SIDE` pixels a side:

- size: log2 width and height and the aspect ratio of the decoded image;
- format: file type (suffix) and PIL mode, one-hot;
- colour: whether the channels differ, and the mean chroma (max - min channel);
- border: mean and spread of a strip of `BORDER` of each side, and how much the sides differ;
- text: small bright connected components outside the (grown) head mask of
  `transforms.find_foreground`, counted on a block-maximum copy (thin letters survive it),
  and their area;
- framing: head fraction of the image, head box centre and extent, and the skull ring (mean
  of the head's outer band over its interior: a bright scalp/skull rim vs a stripped brain);
- intensity: percentiles of the head's pixels and an 8-bin histogram of them scaled by their
  99th percentile (gain-free shape: a proxy of the MRI contrast/weighting).

`mediscan.data.shortcut_audit` turns these into cross-validated AUCs and flags.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from mediscan.data.folders import ImageFolder
from mediscan.data.hashing import cache_file, canonical_pixels, file_stamp, map_samples
from mediscan.data.readers import ImageReadError, suffix_of
from mediscan.transforms import find_foreground, to_grey

VERSION = 1  # bump whenever `measure` changes (the per-file cache is keyed by it)
SIDE = 128
BORDER = 0.05
TEXT_MIN_LEVEL = 96.0  # a text pixel is at least this bright (and twice the head threshold)
TEXT_MAX_AREA = 0.01  # a component covering more of the image than this is no letter
HEAD_MARGIN = 3  # the head mask grows by this many pixels before the margins are searched
RING_WIDTH = 0.05  # the skull ring's width, as a fraction of the square root of the head's area
HIST_BINS = 8
PERCENTILES = (5, 25, 50, 75, 95)

NUMERIC = {
    "size": ["log2_width", "log2_height", "aspect"],
    "colour": ["colour", "chroma"],
    "border": ["border_mean", "border_std", "border_side_range"],
    "text": ["text_components", "text_area"],
    "framing": ["head_fraction", "head_cx", "head_cy", "head_w", "head_h", "skull_ring"],
    "intensity": [f"p{p}" for p in PERCENTILES] + [f"hist{k}" for k in range(HIST_BINS)],
}
GROUPS = ("size", "format", "colour", "border", "text", "framing", "intensity", "all")
FEATURES = [name for group in NUMERIC.values() for name in group]


# --- per image --------------------------------------------------------------------------------

def _downscaled(img: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(colour or grey block-mean copy, its grey, grey block-maximum copy) at most SIDE a side."""
    step = -(-max(img.shape[:2]) // SIDE)
    if step == 1:
        grey = to_grey(img)
        return img, grey, grey
    small = np.asarray(Image.fromarray(np.ascontiguousarray(img)).reduce(step))
    grey = to_grey(img)
    h, w = (grey.shape[0] // step) * step, (grey.shape[1] // step) * step
    peak = grey[:h, :w].reshape(h // step, step, w // step, step).max(axis=(1, 3))
    return small, to_grey(small), peak


def _border(grey: np.ndarray) -> list[float]:
    k = max(1, round(BORDER * min(grey.shape)))
    sides = [grey[:k], grey[-k:], grey[:, :k], grey[:, -k:]]
    strip = np.concatenate([s.ravel() for s in sides]).astype(np.float64)
    means = [float(s.mean()) for s in sides]
    return [strip.mean() / 255, strip.std() / 255, (max(means) - min(means)) / 255]


def _text(peak: np.ndarray, head: np.ndarray | None, threshold: float) -> list[float]:
    """Small bright components outside the grown head: count and fraction of the image."""
    shape = peak.shape
    outside = np.ones(shape, bool) if head is None else \
        ~ndimage.binary_dilation(head[:shape[0], :shape[1]], iterations=HEAD_MARGIN)
    bright = (peak >= max(TEXT_MIN_LEVEL, 2 * threshold)) & outside
    labels, count = ndimage.label(bright)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    small = sizes[sizes <= TEXT_MAX_AREA * peak.size]
    return [float(len(small)), float(small.sum()) / peak.size]


def _framing(head: np.ndarray | None, grey: np.ndarray) -> list[float]:
    if head is None:
        return [0.0] + [math.nan] * 5
    rows, cols = np.nonzero(head)
    h, w = head.shape
    width = max(2, round(RING_WIDTH * math.sqrt(head.sum())))
    edge = ndimage.binary_erosion(head)  # the mask's outermost pixel is half background (smoothing)
    band = edge & ~ndimage.binary_erosion(edge, iterations=width)
    interior = ndimage.binary_erosion(edge, iterations=2 * width)
    inner = grey[interior].mean() if interior.any() else math.nan
    ring = float(grey[band].mean() / inner) if band.any() and inner > 0 else math.nan
    return [float(head.mean()), (cols.min() + cols.max() + 1) / 2 / w, (rows.min() + rows.max() + 1) / 2 / h,
            (cols.max() - cols.min() + 1) / w, (rows.max() - rows.min() + 1) / h, ring]


def _intensity(grey: np.ndarray, head: np.ndarray | None) -> list[float]:
    """Percentiles (/255) of the head's pixels and their gain-free histogram: a proxy of the MRI contrast."""
    if head is None:
        return [math.nan] * (len(PERCENTILES) + HIST_BINS)
    pixels = grey[head].astype(np.float64)
    top = max(np.percentile(pixels, 99), 1.0)
    hist = np.histogram(np.clip(pixels / top, 0, 1), bins=HIST_BINS, range=(0, 1))[0] / len(pixels)
    return [float(v) / 255 for v in np.percentile(pixels, PERCENTILES)] + hist.tolist()


def measure(img: np.ndarray) -> list[float]:
    """The numeric properties (FEATURES order) of one decoded uint8 image."""
    small, grey, peak = _downscaled(img)
    colour = canonical_pixels(small).ndim == 3
    chroma = float((small.max(axis=2).astype(np.int16) - small.min(axis=2)).mean() / 255) if colour else 0.0
    found = find_foreground(grey)
    head = None if found is None else found.mask
    threshold = 0.0 if found is None else found.threshold
    height, width = img.shape[:2]
    return [math.log2(width), math.log2(height), width / height, float(colour), chroma,
            *_border(grey), *_text(peak, head, threshold), *_framing(head, grey), *_intensity(grey, head)]


def head_intensity(img: np.ndarray) -> list[float]:
    """The intensity properties (NUMERIC["intensity"] order) of one decoded uint8 image, as `measure`
    takes them: on the downscaled grey copy, inside the head (NaN when no head is found)."""
    _, grey, _ = _downscaled(img)
    found = find_foreground(grey)
    return _intensity(grey, None if found is None else found.mask)


def _file_mode(path: Path) -> str:
    """The PIL mode from the file's header, or "-" for what PIL does not open (DICOM, NIfTI)."""
    try:
        with Image.open(path) as image:
            return image.mode
    except (OSError, ValueError):
        return "-"


def _measure_sample(folder: ImageFolder, i: int) -> dict:
    sample = folder.samples[i]
    try:
        values = measure(folder.read(i))
    except (ImageReadError, OSError, ValueError) as error:
        return {"error": getattr(error, "reason", str(error))}
    return {"values": values, "format": suffix_of(sample.path.name) or "(none)",
            "mode": _file_mode(folder.path_of(i))}


def folder_properties(folder: ImageFolder, *, workers: int | None = None, progress: bool = True,
                      cache_dir: Path | None = None) -> list[dict]:
    """Properties of every sample (parallel processes, cached per file); unreadable: {"error"}."""
    path = cache_file(folder, cache_dir, f"shortcuts-v{VERSION}", ".json")
    try:
        cached = json.loads(path.read_text()) if path.exists() else {}
    except (OSError, ValueError):
        cached = {}
    stamps = [file_stamp(folder, i) for i in range(len(folder))]
    results = {i: cached[s] for i, s in enumerate(stamps) if s in cached}
    todo = [i for i in range(len(folder)) if i not in results]
    results.update(map_samples(folder, _measure_sample, todo, workers=workers, progress=progress,
                               title="measuring image properties"))
    if todo:
        cached.update({stamps[i]: results[i] for i in todo if stamps[i] != "missing"})
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(cached))
        os.replace(tmp, path)
    return [results[i] for i in range(len(folder))]


def feature_matrices(properties: list[dict]) -> dict[str, np.ndarray]:
    """Per property group, an N x d float matrix of the readable samples (NaN: not measurable)."""
    values = np.array([p["values"] for p in properties], dtype=np.float64).reshape(-1, len(FEATURES))
    matrices = {group: values[:, [FEATURES.index(n) for n in names]] for group, names in NUMERIC.items()}
    kinds = sorted({f"{p['format']}|{p['mode']}" for p in properties})
    matrices["format"] = np.array([[float(f"{p['format']}|{p['mode']}" == k) for k in kinds]
                                   for p in properties]).reshape(-1, len(kinds))
    matrices["all"] = np.concatenate([matrices[g] for g in GROUPS if g != "all"], axis=1)
    return {g: matrices[g] for g in GROUPS}
