"""One preprocessing for every path: decoded uint8 image -> uint8 C x S x S model input.

Steps, each optional and recorded in model.json: greyscale/RGB handling, crop to the head
(largest bright connected component), robust percentile intensity normalisation, and an
aspect-preserving resize with zero padding ("pad") or the tutorials' plain stretch ("stretch").
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from scipy import ndimage

FITS = ("pad", "stretch")
RESAMPLE = Image.BILINEAR
CROP_MARGIN = 0.04  # fraction of the crop's side added around the head


def to_grey(img: np.ndarray) -> np.ndarray:
    """uint8 H x W from H x W or H x W x 3 (ITU-R 601 luma, as PIL's "L")."""
    if img.ndim == 2:
        return img
    weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return np.clip(img[..., :3].astype(np.float32) @ weights + 0.5, 0, 255).astype(np.uint8)


def foreground_box(grey: np.ndarray) -> tuple[int, int, int, int] | None:
    """(top, bottom, left, right) of the largest bright connected region, or None if blank.

    Threshold at a fraction of a high percentile of a smoothed, downscaled copy; the largest
    component ignores burned-in letters and specks in the margins."""
    h, w = grey.shape
    step = max(1, max(h, w) // 128)
    small = ndimage.uniform_filter(grey[::step, ::step].astype(np.float32), size=3)
    high = np.percentile(small, 99)
    if high < 8:
        return None
    mask = ndimage.binary_fill_holes(small > max(0.1 * high, 4.0))
    labels, count = ndimage.label(mask)
    if count == 0:
        return None
    sizes = ndimage.sum_labels(mask, labels, index=np.arange(1, count + 1))
    rows, cols = np.nonzero(labels == 1 + int(np.argmax(sizes)))
    box = (rows.min() * step, (rows.max() + 1) * step, cols.min() * step, (cols.max() + 1) * step)
    margin = int(CROP_MARGIN * max(box[1] - box[0], box[3] - box[2]))
    return (max(0, box[0] - margin), min(h, box[1] + margin),
            max(0, box[2] - margin), min(w, box[3] + margin))


def crop_to_foreground(img: np.ndarray) -> np.ndarray:
    """The image cropped to its head/brain region (unchanged when none is found)."""
    box = foreground_box(to_grey(img))
    if box is None:
        return img
    top, bottom, left, right = box
    return img[top:bottom, left:right]


def clip_intensity(img: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map the [low, high] percentiles of the non-black pixels to 0..255."""
    grey = to_grey(img)
    values = grey[grey > 4]
    if values.size < 16:
        return img
    lo, hi = np.percentile(values, [low, high])
    if hi - lo < 1:
        return img
    scaled = (img.astype(np.float32) - lo) * (255.0 / (hi - lo))
    return np.clip(scaled + 0.5, 0, 255).astype(np.uint8)


def resize(img: np.ndarray, size: int, fit: str) -> np.ndarray:
    """Resize to size x size: stretch, or keep the aspect ratio and pad with black."""
    pil = Image.fromarray(img)
    if fit == "stretch":
        return np.asarray(pil.resize((size, size), RESAMPLE))
    w, h = pil.size
    scale = size / max(w, h)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    out = np.zeros((size, size, *img.shape[2:]), dtype=np.uint8)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    out[top:top + new_h, left:left + new_w] = np.asarray(pil.resize((new_w, new_h), RESAMPLE))
    return out


@dataclass(frozen=True)
class Preprocess:
    """Decoded image (uint8 H x W or H x W x 3) -> uint8 C x S x S, identically everywhere."""

    size: int
    channels: int = 3
    fit: str = "pad"
    crop_foreground: bool = False
    clip_percentiles: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.fit not in FITS:
            raise ValueError(f"fit must be one of {FITS}, got {self.fit!r}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")

    def __call__(self, img: np.ndarray) -> np.ndarray:
        img = np.asarray(img)
        if img.dtype != np.uint8 or img.ndim not in (2, 3):
            raise ValueError(f"expected a uint8 H x W or H x W x 3 image, got {img.dtype} {img.shape}")
        img = to_grey(img) if self.channels == 1 else img
        if self.crop_foreground:
            img = crop_to_foreground(img)
        if self.clip_percentiles is not None:
            img = clip_intensity(img, *self.clip_percentiles)
        img = resize(img, self.size, self.fit)
        if img.ndim == 2:
            img = np.repeat(img[None], self.channels, axis=0)
        else:
            img = img.transpose(2, 0, 1)
        return np.ascontiguousarray(img)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Preprocess:
        data = dict(data)
        if data.get("clip_percentiles") is not None:
            data["clip_percentiles"] = tuple(data["clip_percentiles"])
        return cls(**data)

    def key(self) -> str:
        """A short stable id of these settings (for cache keys)."""
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.blake2b(text.encode(), digest_size=6).hexdigest()


def normalize(batch: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 N x C x H x W -> float (x / 255 - mean) / std, on the batch's device."""
    mean_t = torch.as_tensor(mean, dtype=torch.float32, device=batch.device).view(1, -1, 1, 1)
    std_t = torch.as_tensor(std, dtype=torch.float32, device=batch.device).view(1, -1, 1, 1)
    return (batch.float() / 255.0 - mean_t) / std_t
