"""Small generated data sets that look like other modalities: stained cells, fundus, ultrasound,
a MedMNIST-like tiny grey set. Each writer makes class folders (or an .npz) and returns the root."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

CLASSES = ("a", "b")


def _save(root: Path, images: list[np.ndarray], suffix: str = ".png") -> Path:
    for k, image in enumerate(images):
        path = root / CLASSES[k % 2] / f"{k:03d}{suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path, quality=90)
    return root


def microscopy(root: Path, n: int = 12, size: int = 96, seed: int = 0) -> Path:
    """Pink/purple stained blobs (nuclei, cells) on a light background, as JPEGs."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images = []
    for _ in range(n):
        image = np.empty((size, size, 3), np.float32)
        image[:] = (238, 222, 232)
        for _ in range(int(rng.integers(4, 9))):
            cy, cx, r = rng.uniform(10, size - 10), rng.uniform(10, size - 10), rng.uniform(5, 14)
            inside = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
            image[inside] = rng.choice([(200, 90, 170), (120, 50, 150)]) + rng.normal(0, 8, 3)
        image += rng.normal(0, 4, image.shape)
        images.append(np.clip(image, 0, 255).astype(np.uint8))
    return _save(root, images, ".jpg")


def fundus(root: Path, n: int = 12, size: int = 128, seed: int = 0) -> Path:
    """An orange-red disc (retina) with a bright optic disc and dark vessels, on black."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] + 0.5
    images = []
    for _ in range(n):
        radius = size * rng.uniform(0.36, 0.42)
        cy, cx = size / 2 + rng.uniform(-4, 4), size / 2 + rng.uniform(-4, 4)
        distance = np.hypot(yy - cy, xx - cx) / radius
        image = np.zeros((size, size, 3), np.float32)
        shade = np.clip(1.1 - 0.5 * distance ** 2, 0, 1)[..., None]
        image[distance < 1] = (shade * np.array([210, 95, 40]))[distance < 1]
        disc = np.hypot(yy - cy, xx - cx - radius * 0.45) < radius * 0.15
        image[disc] = (250, 210, 120)
        vessels = np.abs(np.sin(np.arctan2(yy - cy, xx - cx) * 5)) < 0.05
        image[vessels & (distance < 0.95)] *= 0.6
        image += rng.normal(0, 3, image.shape) * (distance < 1)[..., None]
        images.append(np.clip(image, 0, 255).astype(np.uint8))
    return _save(root, images, ".jpg")


def ultrasound(root: Path, n: int = 12, size: int = 112, seed: int = 0) -> Path:
    """A grey speckle fan (apex at the top) filling most of the frame, black around it."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] + 0.5
    radius, angle = np.hypot(yy + size * 0.1, xx - size / 2), np.arctan2(xx - size / 2, yy + size * 0.1)
    fan = (np.abs(angle) < 0.85) & (radius < size * 1.15)
    images = []
    for _ in range(n):
        speckle = rng.rayleigh(1.0, (size, size))
        tissue = ndimage.gaussian_filter(rng.normal(0, 1, (size, size)), 6)
        image = np.clip(60 * speckle * (1 + 0.4 * tissue), 0, 255) * fan
        images.append(image.astype(np.uint8))
    return _save(root, images)


def tiny_grey_npz(path: Path, n: int = 40, size: int = 28, seed: int = 0) -> Path:
    """A PneumoniaMNIST-like archive: 28 px grey chest-like images filling the frame, 2 classes."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    arrays = {}
    for split, count in (("train", n), ("val", n // 4), ("test", n // 4)):
        labels = np.arange(count) % 2
        lungs = 1 - 0.6 * np.exp(-((xx - 0.3) ** 2 + (yy - 0.5) ** 2) / 0.03) \
            - 0.6 * np.exp(-((xx - 0.7) ** 2 + (yy - 0.5) ** 2) / 0.03)
        images = 60 + 150 * lungs[None] + rng.normal(0, 12, (count, size, size)) + 20 * labels[:, None, None]
        arrays[f"{split}_images"] = np.clip(images, 0, 255).astype(np.uint8)
        arrays[f"{split}_labels"] = labels[:, None]
    np.savez(path, **arrays)
    return path


def organ_sides_npz(path: Path, n: int = 60, size: int = 28, seed: int = 0) -> Path:
    """An OrganMNIST-like archive: class 0 an organ left of a spine, class 1 its mirror image (the
    organ on the other side), class 2 a symmetric one; positions and brightness jittered."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    arrays = {}
    for split, count in (("train", n), ("val", n // 3), ("test", n // 3)):
        labels = np.arange(count) % 3
        images = []
        for label in labels:
            dx, dy = rng.normal(0, 0.03, 2)
            spine = np.exp(-((xx - 0.5 - dx) ** 2 / 0.004 + (yy - 0.75 - dy) ** 2 / 0.01))
            side = {0: 0.28, 1: 0.72, 2: 0.5}[int(label)]
            organ = np.exp(-((xx - side - dx) ** 2 + (yy - 0.4 - dy) ** 2) / 0.015)
            images.append(40 + 150 * organ + 120 * spine + rng.normal(0, 8, (size, size)))
        arrays[f"{split}_images"] = np.clip(np.stack(images), 0, 255).astype(np.uint8)
        arrays[f"{split}_labels"] = labels[:, None]
    np.savez(path, **arrays)
    return path
