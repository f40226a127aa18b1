"""Preprocess: shapes, aspect-preserving pad, head crop, intensity clipping, settings, normalisation."""

import json
import time

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from mediscan.data.phantom import PHANTOM_CLASSES, render
from mediscan.transforms import (Preprocess, clip_intensity, crop_to_foreground, find_foreground,
                                 foreground_box, normalize, otsu_threshold, to_grey, upright)


def _head_on_canvas(margin: int = 60, letter_at: tuple[int, int] = (4, 4)) -> np.ndarray:
    """A 200 x 160 grey ellipse with wide black margins and a burned-in white letter."""
    canvas = Image.new("L", (200 + 2 * margin, 160 + 2 * margin))
    draw = ImageDraw.Draw(canvas)
    draw.ellipse((margin, margin, margin + 200, margin + 160), fill=140)
    draw.text(letter_at, "A", fill=255)
    return np.asarray(canvas)


def _fill(out: np.ndarray) -> float:
    """Fraction of a preprocessed image's pixels that are not background."""
    return float((out > 20).mean())


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("fit", ["pad", "stretch"])
@pytest.mark.parametrize("crop", [False, True])
@pytest.mark.parametrize("clip", [None, (1, 99)])
@pytest.mark.parametrize("shape", [(50, 80), (80, 50, 3), (33, 47, 1), (40, 40, 4)])
def test_output_shape_and_dtype(channels, fit, crop, clip, shape):
    img = np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)
    out = Preprocess(32, channels=channels, fit=fit, crop_foreground=crop, clip_percentiles=clip)(img)
    assert out.shape == (channels, 32, 32) and out.dtype == np.uint8 and out.flags.c_contiguous


@pytest.mark.parametrize("shape, rows", [((100, 200), True), ((200, 100), False)])
def test_pad_keeps_the_aspect_ratio(shape, rows):
    img = np.full(shape, 255, dtype=np.uint8)
    out = Preprocess(64, channels=1, fit="pad")(img)[0]
    profile = out.max(axis=1 if rows else 0)
    band = np.flatnonzero(profile > 128)
    assert band.min() == 16 and band.max() == 47  # a centred 64 x 32 band
    assert out[out > 128].size == 64 * 32 and (out[out <= 128] == 0).all()
    stretched = Preprocess(64, channels=1, fit="stretch")(img)[0]
    assert (stretched > 128).all()


def test_rgb_is_kept_and_grey_is_luminance():
    img = np.zeros((20, 30, 3), dtype=np.uint8)
    img[..., 0] = 200
    rgb = Preprocess(16, channels=3, fit="stretch")(img)
    assert (rgb[0] == 200).all() and (rgb[1:] == 0).all()
    grey = Preprocess(16, channels=1, fit="stretch")(img)
    assert (grey == np.asarray(Image.fromarray(img).convert("L"))[0, 0]).all()  # 0.299 * 200 -> 60
    replicated = Preprocess(16, channels=3)(img[..., 0])
    assert (replicated[0] == replicated[1]).all() and (replicated[1] == replicated[2]).all()


def test_grey_and_rgb_copies_agree():
    grey = np.random.default_rng(1).integers(0, 255, (40, 40), dtype=np.uint8)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    np.testing.assert_array_equal(to_grey(rgb), grey)
    pre = Preprocess(32, crop_foreground=True, clip_percentiles=(0.5, 99.5))
    np.testing.assert_array_equal(pre(grey), pre(rgb))


def test_foreground_box_finds_the_head_not_the_letter():
    top, bottom, left, right = foreground_box(_head_on_canvas())
    assert 45 <= top <= 62 and 218 <= bottom <= 236
    assert 45 <= left <= 62 and 258 <= right <= 276


def test_crop_blanks_a_letter_inside_the_heads_box():
    img = _head_on_canvas(margin=30, letter_at=(36, 34))  # a corner of the ellipse's box, off the head
    assert img[30:60, 30:60].max() > 200
    cropped = crop_to_foreground(img)
    assert cropped.max() == 140 and cropped.shape[0] < 185 and cropped.shape[1] < 225


def test_crop_ignores_the_noise_floor_of_a_grey_background():
    rng = np.random.default_rng(0)
    canvas = Image.new("L", (300, 240), color=12)  # a grey, noisy background
    draw = ImageDraw.Draw(canvas)
    draw.ellipse((80, 60, 220, 180), fill=70)  # scalp ...
    draw.ellipse((86, 66, 214, 174), fill=15)  # ... dark skull ...
    draw.ellipse((92, 72, 208, 168), fill=120)  # ... brain
    signal = np.asarray(canvas, dtype=float)
    noisy = np.hypot(signal + rng.normal(0, 12, signal.shape), rng.normal(0, 12, signal.shape))
    top, bottom, left, right = foreground_box(np.clip(noisy, 0, 255).astype(np.uint8))
    assert 50 <= top <= 62 and 178 <= bottom <= 192 and 68 <= left <= 82 and 218 <= right <= 232


@pytest.mark.parametrize("img", [np.zeros((30, 40), np.uint8), np.full((30, 40), 128, np.uint8),
                                 np.zeros((1, 1), np.uint8), np.full((3, 2, 3), 255, np.uint8),
                                 _head_on_canvas(margin=200)[:80, :80]],  # only the letter
                         ids=["black", "uniform", "1x1", "tiny-rgb", "letter-only"])
def test_blank_and_degenerate_images_pass_through(img):
    assert crop_to_foreground(img).shape == img.shape
    out = Preprocess(16, crop_foreground=True, clip_percentiles=(1, 99))(img)
    assert out.shape == (3, 16, 16)
    if img.max() == 0:
        assert out.max() == 0


def test_crop_makes_shifted_phantoms_framed_like_the_training_style():
    crop = Preprocess(64, channels=1, crop_foreground=True)
    plain = Preprocess(64, channels=1)
    default = [render(PHANTOM_CLASSES[k % 4], np.random.default_rng(k))[0] for k in range(12)]
    shifted = [render(PHANTOM_CLASSES[k % 4], np.random.default_rng(k), style="shifted")[0] for k in range(12)]
    shifted_plain = np.median([_fill(plain(img)) for img in shifted])
    shifted_cropped = np.median([_fill(crop(img)) for img in shifted])
    default_cropped = np.median([_fill(crop(img)) for img in default])
    assert shifted_cropped > shifted_plain + 0.15
    assert abs(shifted_cropped - default_cropped) < 0.06
    boxes = [find_foreground(crop(img)[0]).box((64, 64)) for img in shifted]
    assert min(max(b - t, r - le) for t, b, le, r in boxes) >= 60  # the head spans the frame
    letters = [(crop(img) == 255).sum() for img in shifted]
    assert np.median(letters) == 0  # letters in the margins are gone


def test_percentile_clipping_uses_the_foreground():
    rng = np.random.default_rng(0)
    img = np.zeros((64, 64), dtype=np.uint8)
    img[16:48, 16:48] = rng.integers(50, 101, (32, 32))
    out = clip_intensity(img, 1, 99)
    assert out[16:48, 16:48].min() == 0 and out[16:48, 16:48].max() == 255
    assert out[:16].max() == 0  # the background stays black
    lo, hi = np.percentile(img[16:48, 16:48], [1, 99], method="inverted_cdf")
    expected = np.clip((img[16:48, 16:48].astype(float) - lo) * 255 / (hi - lo) + 0.5, 0, 255).astype(np.uint8)
    assert np.abs(out[16:48, 16:48].astype(int) - expected).max() <= 1  # rounding


def test_percentile_clipping_equalises_gain_and_offset():
    img, _ = render("glioma", np.random.default_rng(4))
    darker = (img * 0.5).astype(np.uint8)
    pre = Preprocess(64, channels=1, crop_foreground=True, clip_percentiles=(0.5, 99.5))
    assert np.abs(pre(img).astype(int) - pre(darker)).mean() < 4


def test_otsu_threshold_splits_two_modes():
    values = np.concatenate([np.full(100, 10), np.full(50, 200)])
    assert 10 < otsu_threshold(values) < 200
    assert otsu_threshold(np.full(10, 7)) is None
    assert find_foreground(np.zeros((8, 8), np.uint8)) is None


def test_dict_round_trip_and_key():
    pre = Preprocess(48, channels=1, fit="stretch", crop_foreground=True, clip_percentiles=(1, 99))
    again = Preprocess.from_dict(json.loads(json.dumps(pre.to_dict())))
    assert again == pre and again.key() == pre.key()
    assert again.clip_percentiles == (1.0, 99.0)
    assert Preprocess(48).key() != pre.key() and len(pre.key()) == 12
    assert Preprocess.from_dict(Preprocess(48).to_dict()) == Preprocess(48)
    with pytest.raises(ValueError, match="valid"):
        Preprocess.from_dict({"size": 48, "colour": "red"})


def _tilted_head(tilt: float, shift: int = 0) -> np.ndarray:
    """A 128-px elliptic "head" (long axis vertical before the tilt) with a bright blob left of its midline."""
    img = Image.new("L", (128, 128))
    draw = ImageDraw.Draw(img)
    draw.ellipse((29 + shift, 16, 99 + shift, 112), fill=120)
    draw.ellipse((40 + shift, 40, 54 + shift, 54), fill=250)
    return np.asarray(img.rotate(tilt, Image.BILINEAR, center=(64 + shift, 64)))


def _long_axis(grey: np.ndarray) -> tuple[float, float]:
    """(degrees from vertical, centre column) of the pixels above the noise floor."""
    ys, xs = np.nonzero(grey > 20)
    cov = np.cov(np.stack([xs - xs.mean(), ys - ys.mean()]))
    return float(np.degrees(0.5 * np.arctan2(2 * cov[0, 1], cov[0, 0] - cov[1, 1])) % 180 - 90), float(xs.mean())


@pytest.mark.parametrize("tilt", [-20, -8, 0, 12, 24])
def test_upright_turns_the_long_axis_vertical_and_centres_it(tilt):
    axis, centre = _long_axis(upright(_tilted_head(tilt, shift=12)))
    assert abs(axis) < 1.5 and abs(centre - 63.5) < 1.5


def test_upright_leaves_other_views_and_blank_images_alone():
    sideways = _tilted_head(80)  # the long axis near horizontal: a sagittal-like view, not a tilted head
    assert abs(_long_axis(upright(sideways))[0] - _long_axis(sideways)[0]) < 1.0
    assert not upright(np.zeros((32, 32), dtype=np.uint8)).any()


def test_mirror_channel_puts_each_pixel_beside_its_left_right_counterpart():
    out = Preprocess(128, mirror_channel=True)(_tilted_head(10))
    assert out.shape == (3, 128, 128)
    assert np.array_equal(out[0], out[1]) and np.array_equal(out[2], out[0][:, ::-1])
    assert np.array_equal(out[0], upright(_tilted_head(10)))  # the head upright first: the mirror is anatomical
    assert out[0][40:54, 40:54].mean() > 200 and out[2][40:54, 40:54].max() < 150  # the blob has no twin
    rgb = np.stack([_tilted_head(0)] * 3, axis=-1)
    assert np.array_equal(Preprocess(128, mirror_channel=True)(rgb)[0], upright(_tilted_head(0)))


def test_mirror_channel_round_trips_and_leaves_older_settings_keys_alone():
    mirrored = Preprocess(48, mirror_channel=True)
    assert Preprocess.from_dict(json.loads(json.dumps(mirrored.to_dict()))) == mirrored
    assert mirrored.key() != Preprocess(48).key()
    assert "mirror_channel" not in Preprocess(48).to_dict()  # bundles and caches from before it: same keys
    with pytest.raises(ValueError, match="mirror_channel needs 3 channels"):
        Preprocess(48, channels=1, mirror_channel=True)


def test_invalid_settings_are_refused():
    with pytest.raises(ValueError, match="fit"):
        Preprocess(32, fit="crop")
    with pytest.raises(ValueError, match="channels"):
        Preprocess(32, channels=2)
    with pytest.raises(ValueError, match="clip_percentiles"):
        Preprocess(32, clip_percentiles=(99, 1))
    with pytest.raises(ValueError, match="size"):
        Preprocess(0)
    with pytest.raises(ValueError, match="uint8"):
        Preprocess(32)(np.zeros((4, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="uint8"):
        Preprocess(32)(np.zeros((4, 4, 2), dtype=np.uint8))


def test_normalize_matches_manual_computation():
    batch = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    expected = (batch.double() / 255 - torch.tensor(mean, dtype=torch.float64).view(1, 3, 1, 1)) \
        / torch.tensor(std, dtype=torch.float64).view(1, 3, 1, 1)
    out = normalize(batch, mean, std)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), expected, rtol=1e-6, atol=1e-6)


def test_normalize_keeps_channels_last_and_device():
    batch = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8).contiguous(memory_format=torch.channels_last)
    out = normalize(batch, (0.5,) * 3, (0.25,) * 3)
    assert out.is_contiguous(memory_format=torch.channels_last)
    if torch.cuda.is_available():
        assert normalize(batch.cuda(), (0.5,) * 3, (0.25,) * 3).device.type == "cuda"


def test_speed_is_reported(capsys):
    """About 1 ms per 224 px image on one core (printed, never asserted: machines differ)."""
    images = [render(PHANTOM_CLASSES[k % 4], np.random.default_rng(k), size=224, style="shifted")[0]
              for k in range(16)]
    for name, pre in [("resize only", Preprocess(224)),
                      ("crop + clip + pad", Preprocess(224, crop_foreground=True, clip_percentiles=(0.5, 99.5)))]:
        pre(images[0])
        start = time.process_time()
        for img in images * 3:
            pre(img)
        ms = (time.process_time() - start) / len(images * 3) * 1e3
        with capsys.disabled():
            print(f"\n  Preprocess {name}, ~224 px input -> 3 x 224 x 224: {ms:.2f} ms/image (CPU time)")
