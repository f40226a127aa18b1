"""Preprocess: shapes, aspect-preserving pad, head crop, intensity clipping, normalisation."""

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from mediscan.data.phantom import render
from mediscan.transforms import Preprocess, foreground_box, normalize


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("fit", ["pad", "stretch"])
@pytest.mark.parametrize("crop", [False, True])
@pytest.mark.parametrize("shape", [(50, 80), (80, 50, 3)])
def test_output_shape_and_dtype(channels, fit, crop, shape):
    img = np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)
    out = Preprocess(32, channels=channels, fit=fit, crop_foreground=crop,
                     clip_percentiles=(1, 99))(img)
    assert out.shape == (channels, 32, 32) and out.dtype == np.uint8


def test_pad_keeps_the_aspect_ratio():
    img = np.full((100, 200), 255, dtype=np.uint8)
    out = Preprocess(64, channels=1, fit="pad")(img)[0]
    rows = np.flatnonzero(out.max(axis=1) > 128)
    assert rows.min() == 16 and rows.max() == 47  # a centred 64 x 32 band
    stretched = Preprocess(64, channels=1, fit="stretch")(img)[0]
    assert (stretched > 128).all()


def _head_on_canvas(margin: int = 60) -> np.ndarray:
    canvas = Image.new("L", (200 + 2 * margin, 160 + 2 * margin))
    draw = ImageDraw.Draw(canvas)
    draw.ellipse((margin, margin, margin + 200, margin + 160), fill=140)
    draw.text((4, 4), "A", fill=255)
    return np.asarray(canvas)


def test_foreground_box_finds_the_head_not_the_letter():
    top, bottom, left, right = foreground_box(_head_on_canvas())
    assert 45 <= top <= 62 and 218 <= bottom <= 236
    assert 45 <= left <= 62 and 258 <= right <= 276


def test_crop_makes_a_shifted_phantom_look_like_the_training_framing():
    img, _ = render("notumor", np.random.default_rng(2), size=128, style="shifted")
    plain = Preprocess(64, channels=1)(img)[0]
    cropped = Preprocess(64, channels=1, crop_foreground=True)(img)[0]
    assert (cropped > 20).mean() > (plain > 20).mean() + 0.15


def test_blank_image_passes_through():
    out = Preprocess(16, crop_foreground=True, clip_percentiles=(1, 99))(np.zeros((30, 40), np.uint8))
    assert out.shape == (3, 16, 16) and out.max() == 0


def test_percentile_clipping_stretches_dim_images():
    img = np.random.default_rng(0).integers(10, 60, (64, 64), dtype=np.uint8)
    out = Preprocess(64, channels=1, clip_percentiles=(1, 99))(img)
    assert out.max() == 255 and out.min() == 0


def test_grey_and_rgb_copies_agree():
    grey = np.random.default_rng(1).integers(0, 255, (40, 40), dtype=np.uint8)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    pre = Preprocess(32, crop_foreground=True, clip_percentiles=(0.5, 99.5))
    np.testing.assert_array_equal(pre(grey), pre(rgb))


def test_dict_round_trip_and_key():
    pre = Preprocess(48, channels=1, fit="stretch", crop_foreground=True, clip_percentiles=(1, 99))
    again = Preprocess.from_dict(pre.to_dict())
    assert again == pre and again.key() == pre.key()
    assert Preprocess(48).key() != pre.key()


def test_invalid_settings_are_refused():
    with pytest.raises(ValueError, match="fit"):
        Preprocess(32, fit="crop")
    with pytest.raises(ValueError, match="uint8"):
        Preprocess(32)(np.zeros((4, 4), dtype=np.float32))


def test_normalize_matches_manual_computation():
    batch = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    expected = (batch.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(normalize(batch, mean, std), expected)
