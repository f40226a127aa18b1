"""Tumour-free twins of BraTS slices: the tumour's half of the brain replaced by the mirror image of
the healthy half, or only the tumour itself (a patch).

BraTS volumes are registered to an atlas with the head upright, so the brain's midline is close to
the centre of its bounding box. Where a tumour (grown by a margin) lies wholly on one side of it,
mirroring the other side over it gives a slice at the same level, from the same scanner and with the
same intensity scaling, without the tumour: a specificity check on mid-brain slices, which the
data set's own tumour-free slices (cerebellum and vertex) are not. Perfect symmetry is the whole
twin's one artefact, and it flatters a model that compares the hemispheres. The patched twin
replaces only the grown tumour with the tissue at its mirror place, so the rest of the slice keeps
its natural asymmetry; it keeps the tumour's mass effect too (a pushed midline, squeezed ventricles),
so it is the harder of the two checks.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

MARGIN = 5  # pixels the tumour mask is grown by before it must clear the midline


def midline(brain: np.ndarray) -> int | None:
    """The column of the brain's midline (the centre of its bounding box); None for an empty mask."""
    columns = np.flatnonzero(brain.any(axis=0))
    return None if columns.size == 0 else int(round((columns[0] + columns[-1]) / 2))


def tumour_side(mask: np.ndarray, centre: int, margin: int = MARGIN) -> str | None:
    """"left" or "right" (image columns below or above `centre`) when the grown tumour mask stays on
    one side; None when it crosses the midline or is empty."""
    grown = ndimage.binary_dilation(mask > 0, iterations=margin)
    columns = np.flatnonzero(grown.any(axis=0))
    if columns.size == 0:
        return None
    if columns[-1] < centre:
        return "left"
    return "right" if columns[0] >= centre else None


def from_mirror_place(image: np.ndarray, replace: np.ndarray, centre: int) -> np.ndarray:
    """`image` with the pixels where `replace` (rows x columns) is true taken from their mirror place across
    `centre` (column c from column 2 * centre - 1 - c); a pixel whose mirror place is off the image is kept."""
    width = image.shape[1]
    source = 2 * centre - 1 - np.arange(width)
    take = replace & ((source >= 0) & (source < width))[None, :]
    twin = image.copy()
    twin[take] = image[:, np.clip(source, 0, width - 1)][take]
    return twin


def mirrored_twin(image: np.ndarray, side: str, centre: int) -> np.ndarray:
    """`image` with the columns on `side` of `centre` replaced by the mirrored other side."""
    columns = np.arange(image.shape[1])
    half = columns < centre if side == "left" else columns >= centre
    return from_mirror_place(image, np.broadcast_to(half, image.shape[:2]), centre)


def patched_twin(image: np.ndarray, mask: np.ndarray, centre: int, margin: int = MARGIN) -> np.ndarray:
    """`image` with only the tumour mask (grown by `margin`) replaced by the pixels at its mirror place
    across `centre`; every other pixel as it was."""
    return from_mirror_place(image, ndimage.binary_dilation(mask > 0, iterations=margin), centre)


def twin_plan(brains: dict[str, np.ndarray], masks: dict[str, np.ndarray]) -> dict[str, tuple[str, int]]:
    """{slice name: (tumour side, midline column)} for the slices whose tumour clears the midline;
    `brains` are 0/1 brain masks (the union over contrasts), so every contrast gets the same twins."""
    plan = {}
    for name, brain in brains.items():
        centre = midline(brain)
        side = None if centre is None else tumour_side(masks[name], centre)
        if side is not None:
            plan[name] = (side, centre)
    return plan
