"""Whether a left-right flip turns one class into another (left/right organs), so flips must go.

Flip augmentation (and flip test-time augmentation) assumes a mirrored image keeps its label.
That holds for a brain MRI or a cell, not for "kidney-left" vs "kidney-right" (MedMNIST's organ
sets): there a flipped image is, to the model, the other class with the wrong label. Two signs,
either enough:

- class names that differ only by left <-> right ("femur-left", "femur-right");
- class-mean images: the mirror of class A's mean is much closer to class B's mean than to A's
  own (less than MARGIN times the distance). Symmetric classes mirror onto themselves; classes
  that differ in symmetric ways (opacity, texture) stay closer to themselves than to the others.
"""

from __future__ import annotations

import re

import numpy as np

from mediscan.data import hashing
from mediscan.transforms import as_image

SIDE = 24  # thumbnails compared, pixels a side
MARGIN = 0.5  # mirror(A) closer to B than MARGIN x its distance to A itself: flips turn A into B
MIN_PER_CLASS = 5  # class means from fewer thumbnails are too noisy to judge
_SIDES = {"left": "right", "right": "left"}


def thumbnail(img: np.ndarray) -> np.ndarray:
    """The duplicate search's grey thumbnail at SIDE px, standardised (zero mean, unit std) so that
    exposure does not count."""
    pixels = hashing.thumbnail(as_image(img), SIDE).astype(np.float32)
    return (pixels - pixels.mean()) / (pixels.std() + 1e-6)


def _mirror_name(name: str) -> str:
    return re.sub(r"left|right", lambda m: _SIDES[m.group(0)], name.lower())


def named_pairs(classes: list[str]) -> list[tuple[str, str]]:
    """Pairs of classes whose names differ only by left <-> right."""
    lower = {c.lower(): c for c in classes}
    pairs = []
    for name in classes:
        other = lower.get(_mirror_name(name))
        if other is not None and other.lower() != name.lower() and name < other:
            pairs.append((name, other))
    return pairs


def image_pairs(thumbs: np.ndarray, labels: np.ndarray, classes: list[str]) -> list[tuple[str, str]]:
    """Pairs (A, B) where the mirror of A's mean thumbnail lies close to B's mean, far from A's."""
    means = {k: thumbs[labels == k].mean(axis=0) for k in range(len(classes))
             if (labels == k).sum() >= MIN_PER_CLASS}
    pairs = []
    for k, mean in means.items():
        mirrored = mean[:, ::-1]
        own = float(np.linalg.norm(mirrored - mean))
        others = {j: float(np.linalg.norm(mirrored - m)) for j, m in means.items() if j != k}
        if not others:
            continue
        nearest = min(others, key=others.get)
        if others[nearest] < MARGIN * own:
            pair = tuple(sorted((classes[k], classes[nearest])))
            if pair not in pairs:
                pairs.append(pair)
    return pairs


def mirrored_classes(thumbs: np.ndarray, labels: np.ndarray, classes: list[str]) -> list[tuple[str, str]]:
    """Class pairs that a left-right flip turns into each other, by name or by their images."""
    found = named_pairs(classes)
    for pair in image_pairs(thumbs, labels, classes):
        if pair not in found:
            found.append(pair)
    return found
