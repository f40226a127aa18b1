"""bench/healthy_mirror.py: tumour-free twins of BraTS slices for the source benchmark."""

import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture(scope="module")
def mirror():
    sys.path.insert(0, str(BENCH))
    try:
        import healthy_mirror
    finally:
        sys.path.remove(str(BENCH))
    return healthy_mirror


def brain_slice(width: int = 64) -> np.ndarray:
    """A brain filling columns 8..55 (midline 32), brighter towards the right so halves differ."""
    image = np.zeros((40, width), np.uint8)
    image[5:35, 8:56] = np.linspace(50, 200, 48, dtype=np.uint8)
    return image


def test_midline_is_the_centre_of_the_brain(mirror):
    assert mirror.midline(brain_slice() > 0) == 32
    assert mirror.midline(np.zeros((8, 8), bool)) is None


def test_tumour_side_needs_the_grown_mask_to_clear_the_midline(mirror):
    mask = np.zeros((40, 64), np.uint8)
    mask[10:20, 12:24] = 2
    assert mirror.tumour_side(mask, 32, margin=5) == "left"
    assert mirror.tumour_side(mask, 32, margin=9) is None  # grown to column 32: crosses
    assert mirror.tumour_side(mask[:, ::-1], 32, margin=5) == "right"
    assert mirror.tumour_side(np.zeros_like(mask), 32) is None


def test_the_twin_mirrors_the_healthy_half_over_the_tumour_half(mirror):
    image = brain_slice()
    image[12:18, 14:20] = 255  # the "tumour", on the left
    twin = mirror.mirrored_twin(image, "left", 32)
    assert (twin[:, 32:] == image[:, 32:]).all()  # the healthy half is untouched
    assert (twin[:, :32] == image[:, 32:][:, ::-1]).all()
    assert (twin == twin[:, ::-1]).all() and twin.max() == 200  # symmetric, and the tumour is gone
    right = mirror.mirrored_twin(image, "right", 32)
    assert (right[:, :32] == image[:, :32]).all() and (right[:, 32:] == image[:, :32][:, ::-1]).all()


def test_the_patched_twin_replaces_only_the_grown_tumour(mirror):
    image = brain_slice()
    image[5:35, 8:32] += np.random.default_rng(0).integers(0, 20, (30, 24), dtype=np.uint8)  # natural asymmetry
    mask = np.zeros_like(image)
    mask[12:18, 14:20] = 4
    tumour = image.copy()
    tumour[12:18, 14:20] = 255
    twin = mirror.patched_twin(tumour, mask, 32, margin=2)
    patch = np.zeros(image.shape, bool)
    patch[10:20, 12:22] = True  # the mask grown by 2 (a cross-shaped dilation stays inside this box)
    assert (twin[~patch] == image[~patch]).all()  # the rest keeps its asymmetry
    assert (twin[12:18, 14:20] == image[12:18, 44:50][:, ::-1]).all()  # the tissue at the mirror place
    assert twin.max() < 255 and not (twin == twin[:, ::-1]).all()


def test_colour_slices_keep_their_channels(mirror):
    image = np.stack([brain_slice()] * 3, axis=-1)
    assert mirror.mirrored_twin(image, "right", 32).shape == image.shape
    mask = np.zeros(image.shape[:2], np.uint8)
    mask[12:18, 14:20] = 1
    assert mirror.patched_twin(image, mask, 32).shape == image.shape


def test_twin_plan_keeps_only_slices_whose_tumour_stays_on_one_side(mirror):
    brain = brain_slice() > 0
    one_side, crossing = np.zeros((40, 64), np.uint8), np.zeros((40, 64), np.uint8)
    one_side[10:20, 40:50] = 1
    crossing[10:20, 25:40] = 1
    plan = mirror.twin_plan({"a.png": brain, "b.png": brain}, {"a.png": one_side, "b.png": crossing})
    assert plan == {"a.png": ("right", 32)}
