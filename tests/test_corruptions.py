"""Corruptions: identity at severity 0, intended noise level, monotonic, seeded, type-preserving."""

from itertools import pairwise

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose

from mediscan.evaluation.corruptions import CORRUPTIONS, SEVERITIES, corrupt, describe_corruptions
from mediscan.evaluation.robustness import robustness_results, robustness_score

RANDOM = {"gaussian_noise", "rician_noise", "bias_field", "rotation"}


def phantom(n: int = 4, size: int = 64, channels: int = 1, seed: int = 0) -> np.ndarray:
    """A textured bright disk on black, like a brain slice: N x C x S x S uint8."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    out = np.zeros((n, channels, size, size), dtype=np.uint8)
    for i in range(n):
        r = size * rng.uniform(0.3, 0.42)
        disk = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < r * r
        texture = 120 + 50 * np.sin(xx / rng.uniform(3, 6)) * np.cos(yy / rng.uniform(4, 8))
        img = np.clip(disk * (texture + rng.normal(0, 8, (size, size))), 0, 255)
        for c in range(channels):
            out[i, c] = np.roll(img, 3 * c, axis=1) if channels > 1 else img
    return out


def mse(a: np.ndarray, b: np.ndarray) -> float:
    return float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())


@pytest.fixture(scope="module")
def grey():
    return phantom(channels=1)


@pytest.fixture(scope="module")
def colour():
    return phantom(channels=3, seed=1)


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_severity_zero_is_identity(name, grey, colour):
    for images in (grey, colour):
        out = corrupt(images, name, 0)
        assert out is not images
        np.testing.assert_array_equal(out, images)
    t = torch.from_numpy(colour)
    assert torch.equal(corrupt(t, name, 0), t)


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_degradation_grows_with_severity(name, grey, colour):
    for images in (grey, colour):
        errors = [mse(corrupt(images, name, s, seed=7), images) for s in (0, *SEVERITIES)]
        assert errors[0] == 0
        assert all(b > a for a, b in pairwise(errors)), (name, errors)


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_type_shape_and_determinism(name, colour):
    a = corrupt(colour, name, 3, seed=5)
    assert a.dtype == np.uint8 and a.shape == colour.shape
    np.testing.assert_array_equal(a, corrupt(colour, name, 3, seed=5))
    t = corrupt(torch.from_numpy(colour), name, 3, seed=5)
    assert isinstance(t, torch.Tensor) and t.dtype == torch.uint8
    np.testing.assert_array_equal(t.numpy(), a)
    if name in RANDOM:
        assert not np.array_equal(a, corrupt(colour, name, 3, seed=6))


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_grey_images_stay_grey(name, grey):
    rgb = np.repeat(grey, 3, axis=1)
    out = corrupt(rgb, name, 4, seed=1)
    np.testing.assert_array_equal(out[:, 0], out[:, 1])
    np.testing.assert_array_equal(out[:, 0], out[:, 2])
    np.testing.assert_array_equal(out[:, :1], corrupt(grey, name, 4, seed=1))


@pytest.mark.parametrize("severity", SEVERITIES)
def test_gaussian_noise_has_intended_std(severity):
    flat = np.full((4, 1, 128, 128), 128, dtype=np.uint8)
    out = corrupt(flat, "gaussian_noise", severity).astype(np.float64)
    intended = CORRUPTIONS["gaussian_noise"].parameter_for(severity) * 255
    assert_allclose(out.std(), intended, rtol=0.03)
    assert abs(out.mean() - 128) < 0.5


def test_rician_noise_is_rician():
    std = CORRUPTIONS["rician_noise"].parameter_for(5)
    black = np.zeros((4, 1, 128, 128), dtype=np.uint8)
    out = corrupt(black, "rician_noise", 5).astype(np.float64) / 255
    # on zero signal the magnitude is Rayleigh: mean = sigma * sqrt(pi / 2)
    assert_allclose(out.mean(), std * np.sqrt(np.pi / 2), rtol=0.03)
    bright = np.full((4, 1, 128, 128), 160, dtype=np.uint8)
    out = corrupt(bright, "rician_noise", 5).astype(np.float64) / 255
    assert_allclose(out.std(), std, rtol=0.06)  # high SNR: close to Gaussian


def test_rotation_and_blur_parameters_act_as_documented():
    img = np.zeros((1, 1, 65, 65), dtype=np.uint8)
    img[0, 0, 32, 32:] = 255  # a ray from the centre to the right edge
    rotated = corrupt(img, "rotation", 5, seed=0)[0, 0].astype(float)
    ys, xs = np.nonzero(rotated > 60)
    angle = np.degrees(np.arctan2(np.abs(ys - 32), xs - 32 + 1e-9))
    assert_allclose(np.median(angle[xs > 40]), 30, atol=2.5)
    step = np.zeros((1, 1, 41, 41), dtype=np.uint8)
    step[..., 20:] = 255  # the blurred edge's derivative is the Gaussian kernel
    d = np.diff(corrupt(step, "blur", 5)[0, 0, 20].astype(float))
    x = np.arange(len(d))
    centre = (d * x).sum() / d.sum()
    sd = np.sqrt((d * (x - centre) ** 2).sum() / d.sum())
    assert_allclose(sd, CORRUPTIONS["blur"].parameter_for(5), rtol=0.05)


@pytest.mark.parametrize("args, match", [
    (("fog", 1), "unknown corruption 'fog'; choose one of gaussian_noise"),
    (("blur", 6), "severity must be 0..5"),
])
def test_bad_arguments_are_named(args, match, grey):
    with pytest.raises(ValueError, match=match):
        corrupt(grey, *args)


def test_rejects_non_uint8():
    with pytest.raises(ValueError, match="uint8 N x C x H x W"):
        corrupt(np.zeros((2, 1, 8, 8), dtype=np.float32), "blur", 1)


def test_every_corruption_documents_five_severities():
    rows = describe_corruptions()
    assert [r["name"] for r in rows] == list(CORRUPTIONS)
    assert all(len(r["values"]) == 5 for r in rows)
    from mediscan.evaluation import corruptions
    for name in CORRUPTIONS:
        assert f"| {name}" in corruptions.__doc__


@pytest.mark.parametrize("clean, accs, expected", [
    (0.9, {"blur": [0.9] * 5}, 1.0),
    (0.8, {"blur": [0.8, 0.6, 0.4, 0.2, 0.0], "jpeg": [0.8] * 5}, (0.4 + 0.8) / 2 / 0.8),
    (0.5, {"noise": {1: 0.5, 2: 0.25, 3: 0.25, 4: 0.0, 5: 0.0}}, 0.2 / 0.5),
])
def test_robustness_score(clean, accs, expected):
    assert_allclose(robustness_score(clean, accs), expected)


def test_robustness_results_document():
    doc = robustness_results(0.9, {"blur": [0.9, 0.8, 0.7, 0.6, 0.5]}, seed=3)
    assert doc["severities"] == [1, 2, 3, 4, 5]
    assert doc["corruptions"]["blur"]["values"] == [0.5, 1.0, 1.5, 2.0, 3.0]
    assert_allclose(doc["score"], 0.7 / 0.9)
    assert doc["seed"] == 3
