"""One preprocessing for every path: decoded uint8 image -> uint8 C x S x S model input.

Steps, each optional and recorded in model.json, so that train, evaluate, predict, ONNX and
the server see identical pixels:

1. greyscale (ITU-R 601 luma, PIL's "L") or RGB; grey sources are replicated to 3 channels;
2. crop to the head: threshold a smoothed, downscaled copy at half Otsu's level, fill holes,
   keep the largest connected component (burned-in letters and specks are smaller), crop to
   it with a small margin and blank what lies outside it;
3. robust intensity normalisation: the [p_lo, p_hi] percentiles of the foreground -> 0..255;
4. resize with PIL bilinear (antialiased when shrinking): aspect-preserving with centred zero
   padding ("pad"), or the tutorials' plain stretch ("stretch");
5. mirror channel (opt-in): the grey head turned upright about its centre (its long axis
   vertical) and centred left-right, then grey, grey and grey mirrored left-right.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from typing import NamedTuple, Sequence

import numpy as np
import torch
from PIL import Image
from scipy import ndimage

FITS = ("pad", "stretch")
RESAMPLE = Image.BILINEAR
ALGORITHM_VERSION = 2  # bump whenever the pixels produced for the same settings change
CROP_MARGIN = 0.04  # fraction of the head's longer side added around it
MASK_SIDE = 128  # the head is found on a copy with at most this many pixels on a side
MASK_GROW = 2  # the head mask grows by this many downscaled pixels before the outside is blanked
MIN_HEAD_FRACTION = 0.01  # a largest component smaller than this is no head (blank image, letter)
MIN_SIZE, MAX_SIZE = 8, 1024  # model input side in pixels (every recipe lies well inside)
MAX_TILT = 25.0  # degrees: a head's long axis further from vertical is another view (sagittal), left as it is
MIN_ELONGATION = 1.05  # a rounder head has no reliable long axis to turn upright

Box = tuple[int, int, int, int]  # top, bottom, left, right (numpy slice bounds)


def as_image(img: np.ndarray) -> np.ndarray:
    """Check a decoded image: uint8 H x W or H x W x 3 (H x W x 1 and RGBA are tidied up)."""
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[2] in (1, 4):
        img = img[..., 0] if img.shape[2] == 1 else img[..., :3]
    if img.dtype != np.uint8 or img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] != 3) \
            or min(img.shape[:2]) == 0:
        raise ValueError(f"expected a uint8 H x W or H x W x 3 image, got {img.dtype} {img.shape}")
    return img


def to_grey(img: np.ndarray) -> np.ndarray:
    """uint8 H x W from H x W or H x W x 3 (ITU-R 601 luma, exactly PIL's "L")."""
    if img.ndim == 2:
        return img
    return np.asarray(Image.fromarray(np.ascontiguousarray(img)).convert("L"))


# ---- finding the head ----------------------------------------------------------------------

class Foreground(NamedTuple):
    """Where the head is: a grey-level threshold and the head mask on a downscaled grid."""

    threshold: float
    mask: np.ndarray | None  # None: no component large enough to be a head
    step: int  # one mask pixel covers step x step image pixels

    def box(self, shape: tuple[int, ...]) -> Box | None:
        """The head's bounding box in image pixels, with the margin, clipped to the image."""
        if self.mask is None:
            return None
        rows, cols = ndimage.find_objects(self.mask.astype(np.uint8))[0]
        h, w = shape[:2]
        top, bottom = rows.start * self.step, min(h, rows.stop * self.step)
        left, right = cols.start * self.step, min(w, cols.stop * self.step)
        margin = round(CROP_MARGIN * max(bottom - top, right - left))
        return max(0, top - margin), min(h, bottom + margin), max(0, left - margin), min(w, right + margin)

    def keep(self, shape: tuple[int, ...]) -> np.ndarray:
        """The head mask, grown by MASK_GROW, at full image size."""
        grown = ndimage.binary_dilation(self.mask, iterations=MASK_GROW)
        full = grown.repeat(self.step, axis=0).repeat(self.step, axis=1) if self.step > 1 else grown
        return full[: shape[0], : shape[1]]


def otsu_threshold(values: np.ndarray) -> float | None:
    """Otsu's threshold of values in 0..255 (None when they are all alike)."""
    hist = np.bincount(np.clip(values, 0, 255).astype(np.uint8).ravel(), minlength=256).astype(np.float64)
    below = np.cumsum(hist)[:-1]
    above = hist.sum() - below
    mass = np.cumsum(hist * np.arange(256))
    valid = (below > 0) & (above > 0)
    if not valid.any():
        return None
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mass[-1] * below / hist.sum() - mass[:-1]) ** 2 / (below * above)
    between[~valid] = -1
    return float(np.argmax(between)) + 0.5


def _smoothed_small(grey: np.ndarray) -> tuple[np.ndarray, int]:
    """A block-mean copy at most MASK_SIDE pixels on a side, 3 x 3 smoothed, and the block size."""
    step = -(-max(grey.shape) // MASK_SIDE)
    small = np.asarray(Image.fromarray(grey).reduce(step)) if step > 1 else grey
    return ndimage.uniform_filter(small.astype(np.float32), size=3), step


def find_foreground(grey: np.ndarray) -> Foreground | None:
    """The head in a uint8 grey image, or None when the image is blank or uniform.

    Threshold at half Otsu's level (dim scalp stays in, the background's noise floor stays
    out), fill holes (a closed scalp ring counts with all it encloses), keep the largest
    component: burned-in letters and specks in the margins are smaller."""
    small, step = _smoothed_small(grey)
    if small.max() < 8:
        return None
    otsu = otsu_threshold(small)
    if otsu is None:
        return None
    threshold = max(otsu / 2, 4.0)
    labels, count = ndimage.label(ndimage.binary_fill_holes(small > threshold))
    sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    if count == 0 or sizes.max() < MIN_HEAD_FRACTION * labels.size:
        return Foreground(threshold, None, step)
    return Foreground(threshold, labels == 1 + int(np.argmax(sizes)), step)


def foreground_box(grey: np.ndarray) -> Box | None:
    """(top, bottom, left, right) of the head with a small margin, or None if none is found."""
    found = find_foreground(grey)
    return None if found is None else found.box(grey.shape)


def _crop(img: np.ndarray, found: Foreground | None) -> np.ndarray:
    """Crop to the head's box and blank what lies outside the (grown) head mask."""
    box = None if found is None else found.box(img.shape)
    if box is None:
        return img
    top, bottom, left, right = box
    keep = found.keep(img.shape)[top:bottom, left:right]
    cropped = img[top:bottom, left:right]
    return cropped * (keep[..., None] if img.ndim == 3 else keep)


def crop_to_foreground(img: np.ndarray) -> np.ndarray:
    """The image cropped to its head, outside blanked (unchanged when no head is found)."""
    return _crop(img, find_foreground(to_grey(img)))


# ---- intensity -----------------------------------------------------------------------------

def _percentiles_of(hist: np.ndarray, qs: Sequence[float]) -> list[float]:
    """Percentiles (0..100) of uint8 values from their histogram (NumPy's "inverted_cdf")."""
    cdf = np.cumsum(hist)
    return [float(min(255, np.searchsorted(cdf, q / 100 * cdf[-1], side="left"))) for q in qs]


def _clip(img: np.ndarray, grey: np.ndarray, threshold: float | None, low: float, high: float) -> np.ndarray:
    """Map the [low, high] percentiles of the grey pixels above threshold to 0..255, clipped."""
    if threshold is None:
        return img
    hist = np.bincount(grey.ravel(), minlength=256)
    hist[: int(np.ceil(threshold))] = 0
    if hist.sum() < 16:
        return img
    lo, hi = _percentiles_of(hist, (low, high))
    if hi - lo < 1:
        return img
    lut = np.clip((np.arange(256) - lo) * (255.0 / (hi - lo)) + 0.5, 0, 255).astype(np.uint8)
    pil = Image.fromarray(np.ascontiguousarray(img))
    return np.asarray(pil.point(lut.tolist() * len(pil.getbands())))


def clip_intensity(img: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map the [low, high] percentiles of the foreground (head) pixels to 0..255, clipped."""
    grey = to_grey(img)
    found = find_foreground(grey)
    return _clip(img, grey, None if found is None else found.threshold, low, high)


# ---- size ----------------------------------------------------------------------------------

def placement(width: int, height: int, size: int, fit: str) -> tuple[int, int, int, int]:
    """Where a width x height image lands in the size x size output: (new_w, new_h, left, top)."""
    if fit == "stretch":
        return size, size, 0, 0
    scale = size / max(width, height)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    return new_w, new_h, (size - new_w) // 2, (size - new_h) // 2


def resize(img: np.ndarray, size: int, fit: str) -> np.ndarray:
    """Resize to size x size: stretch, or keep the aspect ratio and pad with black (centred)."""
    pil = Image.fromarray(np.ascontiguousarray(img))
    new_w, new_h, left, top = placement(*pil.size, size, fit)
    resized = np.asarray(pil.resize((new_w, new_h), RESAMPLE))
    if fit == "stretch":
        return resized
    out = np.zeros((size, size, *img.shape[2:]), dtype=np.uint8)
    out[top:top + new_h, left:left + new_w] = resized
    return out


def upright(grey: np.ndarray) -> np.ndarray:
    """The head turned about its centre so that its long axis (second moments of the filled head
    mask) is vertical, and moved to the middle left-right: the midline a mirror is taken about."""
    mask = ndimage.binary_fill_holes(grey > max(8, 0.1 * int(grey.max())))
    ys, xs = np.nonzero(mask)
    if len(ys) < MIN_HEAD_FRACTION * grey.size:
        return grey
    cy, cx = ys.mean(), xs.mean()
    cov = np.cov(np.stack([xs - cx, ys - cy]))
    low, high = np.linalg.eigvalsh(cov)
    major = np.degrees(0.5 * np.arctan2(2 * cov[0, 1], cov[0, 0] - cov[1, 1]))  # from the x axis
    tilt = (major % 180) - 90  # from vertical, -90..90
    turn = tilt if abs(tilt) <= MAX_TILT and high >= MIN_ELONGATION**2 * max(low, 1e-9) else 0.0
    shift = (grey.shape[1] - 1) / 2 - cx
    return np.asarray(Image.fromarray(grey).rotate(turn, RESAMPLE, center=(cx, cy), translate=(shift, 0)))


# ---- the recorded preprocessing ------------------------------------------------------------

@dataclass(frozen=True)
class Preprocess:
    """Decoded image (uint8 H x W or H x W x 3) -> uint8 C x S x S, identically everywhere."""

    size: int
    channels: int = 3
    fit: str = "pad"
    crop_foreground: bool = False
    clip_percentiles: tuple[float, float] | None = None
    # the third channel mirrored left-right: each pixel beside its counterpart in the other half of
    # a centred head, so an asymmetry (a tumour in one hemisphere) is visible to the first layer
    mirror_channel: bool = False

    def __post_init__(self) -> None:
        if self.fit not in FITS:
            raise ValueError(f"fit must be one of {FITS}, got {self.fit!r}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels!r}")
        if self.mirror_channel and self.channels != 3:
            raise ValueError(f"mirror_channel needs 3 channels (the third is the mirror), got {self.channels}")
        if not isinstance(self.size, (int, float)) or isinstance(self.size, bool) \
                or not MIN_SIZE <= self.size <= MAX_SIZE or int(self.size) != self.size:
            raise ValueError(f"size must be an integer from {MIN_SIZE} to {MAX_SIZE}, got {self.size!r}")
        object.__setattr__(self, "size", int(self.size))
        if self.clip_percentiles is not None:  # canonical floats: equal settings, equal keys
            low, high = (float(p) for p in self.clip_percentiles)
            if not 0 <= low < high <= 100:
                raise ValueError(f"clip_percentiles must be 0 <= low < high <= 100, got {self.clip_percentiles}")
            object.__setattr__(self, "clip_percentiles", (low, high))

    def __call__(self, img: np.ndarray) -> np.ndarray:
        """uint8 H x W or H x W x 3 -> uint8 C x S x S."""
        img = as_image(img)
        if self.channels == 1:
            img = to_grey(img)
        if self.crop_foreground or self.clip_percentiles is not None:
            grey = to_grey(img)
            found = find_foreground(grey)
            if self.crop_foreground:
                img = _crop(img, found)
                grey = to_grey(img)
            if self.clip_percentiles is not None:
                img = _clip(img, grey, None if found is None else found.threshold, *self.clip_percentiles)
        img = resize(img, self.size, self.fit)
        if self.mirror_channel:
            grey = upright(to_grey(img))
            return np.ascontiguousarray(np.stack([grey, grey, grey[:, ::-1]]))
        if img.ndim == 2:
            return np.ascontiguousarray(np.broadcast_to(img, (self.channels, *img.shape)))
        return np.ascontiguousarray(img.transpose(2, 0, 1))

    def to_dict(self) -> dict:
        """Plain JSON-able settings (for model.json); mirror_channel only when on, so that settings
        from before it existed keep their cache keys."""
        data = asdict(self)
        if self.clip_percentiles is not None:
            data["clip_percentiles"] = list(self.clip_percentiles)
        if not self.mirror_channel:
            del data["mirror_channel"]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> Preprocess:
        """Settings back from `to_dict`; unknown keys are refused, naming the valid ones."""
        valid = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(valid))
        if unknown:
            raise ValueError(f"unknown preprocessing settings {unknown}; valid: {valid}")
        return cls(**data)

    def key(self) -> str:
        """A short stable id of these settings and the algorithm version (for cache keys)."""
        text = json.dumps({**self.to_dict(), "version": ALGORITHM_VERSION}, sort_keys=True)
        return hashlib.blake2b(text.encode(), digest_size=6).hexdigest()


def normalize(batch: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 N x C x H x W -> float32 (x / 255 - mean) / std, on the batch's device and layout."""
    mean_t = torch.as_tensor(mean, dtype=torch.float32, device=batch.device).view(1, -1, 1, 1)
    std_t = torch.as_tensor(std, dtype=torch.float32, device=batch.device).view(1, -1, 1, 1)
    return (batch.float() / 255.0 - mean_t) / std_t
