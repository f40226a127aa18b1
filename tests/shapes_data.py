"""A tiny learnable data set for end-to-end tests: bright circles, crosses and squares."""

import numpy as np
from PIL import Image

CLASSES = ("circle", "cross", "square")


def shape_image(kind: str, rng: np.random.Generator, size: int = 48) -> np.ndarray:
    """A bright shape at a random place on a noisy dark background."""
    img = rng.normal(40, 12, (size, size))
    r = int(rng.integers(7, 11))
    cy, cx = rng.integers(r + 2, size - r - 2, 2)
    yy, xx = np.mgrid[:size, :size]
    if kind == "circle":
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    elif kind == "square":
        mask = (abs(yy - cy) <= r) & (abs(xx - cx) <= r)
    else:
        mask = ((abs(yy - cy) <= 2) & (abs(xx - cx) <= r)) | ((abs(xx - cx) <= 2) & (abs(yy - cy) <= r))
    img[mask] = rng.normal(200, 15, mask.sum())
    return np.clip(img, 0, 255).astype(np.uint8)


def make_shapes(root, n_per_class: int = 60, seed: int = 0):
    rng = np.random.default_rng(seed)
    for kind in CLASSES:
        (root / kind).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            Image.fromarray(shape_image(kind, rng)).save(root / kind / f"{i:03d}.png")
    return root
