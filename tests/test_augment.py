"""Batched augmentation: seeded, shape-preserving, and each op does what it says."""

import numpy as np
import pytest
import torch
from scipy import ndimage, stats

from mediscan.augment import PRESETS, AugmentConfig, BatchAugment, eroded, filled_head, get_preset, reframe


def _batch(n: int = 8, size: int = 32) -> torch.Tensor:
    x = torch.zeros(n, 3, size, size)
    x[:, :, 8:24, 4:12] = 0.8  # an off-centre bright block
    return x


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_keep_shape_range_and_are_seeded(name):
    a = BatchAugment(name, seed=3)(_batch())
    b = BatchAugment(name, seed=3)(_batch())
    assert a.shape == (8, 3, 32, 32)
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    torch.testing.assert_close(a, b)


def test_none_is_identity():
    x = _batch()
    torch.testing.assert_close(BatchAugment("none")(x.clone()), x)


def test_different_seeds_differ():
    assert not torch.allclose(BatchAugment("strong", seed=1)(_batch()),
                              BatchAugment("strong", seed=2)(_batch()))


def test_horizontal_flip_mirrors_the_block():
    out = BatchAugment(AugmentConfig(hflip=1.0))(_batch(2))
    assert float(out[0, 0, 16, 24]) > 0.7 and float(out[0, 0, 16, 6]) < 0.1


def test_translation_moves_mass_and_keeps_it():
    x = _batch(16)
    out = BatchAugment(AugmentConfig(translate=0.2), seed=0)(x.clone())
    cols = torch.arange(32.0)
    centre_in = (x[:, 0].sum(1) * cols).sum(1) / x[:, 0].sum((1, 2))
    centre_out = (out[:, 0].sum(1) * cols).sum(1) / out[:, 0].sum((1, 2))
    assert (centre_out - centre_in).abs().max() > 1.0


def test_noise_has_the_drawn_magnitude():
    flat = torch.full((64, 1, 32, 32), 0.5)
    out = BatchAugment(AugmentConfig(noise=0.1, p_photometric=1.0), seed=0)(flat)
    std = (out - 0.5).std(dim=(1, 2, 3))
    assert 0.0 < float(std.mean()) < 0.1 and float(std.max()) <= 0.13


def test_bias_field_is_smooth_and_multiplicative():
    flat = torch.full((4, 1, 32, 32), 0.5)
    out = BatchAugment(AugmentConfig(bias_field=0.4, p_photometric=1.0), seed=0)(flat)
    assert float((out - 0.5).abs().max()) > 0.01
    neighbour_diff = (out[..., 1:] - out[..., :-1]).abs().max()
    assert float(neighbour_diff) < 0.05


def test_unknown_preset_lists_choices():
    with pytest.raises(ValueError, match="strong"):
        get_preset("wild")


def test_intensity_curve_keeps_background_black_and_changes_tissue_contrast():
    config = AugmentConfig(intensity_curve=1.0, invert=0.5)
    batch = torch.zeros(16, 3, 32, 32)
    batch[:, :, 8:24, 8:24] = torch.linspace(0.1, 0.9, 16).view(1, 1, 1, 16)
    out = BatchAugment(config, seed=0)(batch.clone())
    assert torch.all(out[:, :, :8] == 0) and torch.all(out[:, :, :, :8] == 0)
    assert torch.equal(out[:, 0], out[:, 1])  # one curve for all channels: grey stays grey
    ramp = out[:, 0, 16, 8:24]
    rising = (ramp[:, -1] > ramp[:, 0]).float().mean()
    assert 0.1 < rising < 0.9  # some curves invert the ramp, some keep its direction
    assert (out - batch).abs().amax() > 0.1


def test_mri_keeps_the_tissue_order_and_mri_contrast_inverts_it_for_some_images():
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    radius = ((yy - 31.5) ** 2 + (xx - 31.5) ** 2).sqrt()
    head = torch.where(radius < 28, 0.3, 0.0) + torch.where(radius < 10, 0.6, 0.0)  # a bright core in grey
    batch = head.expand(64, 1, 64, 64).contiguous()

    def skews(name: str) -> np.ndarray:  # in-head skewness: > 0 while the small core stays the brightest
        out = BatchAugment(name, seed=0)(batch.clone())[:, 0]
        return np.array([stats.skew(image[image > 0.08].numpy()) for image in out])

    assert np.all(skews("mri") > 0.1)
    assert 0.1 < np.mean(skews("mri-contrast") < 0) < 0.5  # inverted or non-monotonic curves


def test_skull_strip_removes_the_rim_keeps_inner_tissue_and_reframes_the_brain():
    config = AugmentConfig(skull_strip=1.0, strip_depth=(0.125, 0.125))
    batch = torch.zeros(2, 1, 64, 64)
    batch[:, :, 8:56, 8:56] = 0.5  # the head, skull included
    batch[:, :, 8:12, 8:56] = 1.0  # a bright skull at the top
    batch[:, :, 28:36, 28:36] = 0.0  # a dark ventricle inside
    out = BatchAugment(config, seed=0)(batch.clone())
    assert out.max() <= 0.5 + 1e-4  # the bright rim is gone
    assert (out[:, :, 1:-1, 1:-1] > 0.25).float().mean() > 0.8  # the brain fills the frame again
    assert torch.all(out[:, :, 28:36, 28:36] < 0.05)  # the ventricle stays dark, centred
    head = filled_head(batch)
    assert torch.all(head[:, :, 28:36, 28:36] == 1)  # the hole counts as head


def test_reframe_zooms_the_mask_box_to_the_frame():
    batch = torch.zeros(1, 1, 40, 40)
    batch[:, :, 0:20, 20:40] = 1.0  # an object in the top-right quarter
    out = reframe(batch, batch > 0.5)
    assert out[:, :, 2:-2, 2:-2].min() > 0.9
    empty = torch.zeros(1, 1, 8, 8)
    assert torch.equal(reframe(empty, empty > 0.5), empty)


@pytest.mark.parametrize("name", ["strong", "mri", "mri-contrast"])
def test_grey_batches_stay_grey_and_match_augmenting_one_channel(name):
    grey = torch.rand(6, 1, 32, 32)
    out = BatchAugment(name, seed=5)(grey.expand(6, 3, 32, 32).contiguous())
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])  # noise included
    torch.testing.assert_close(out[:, :1], BatchAugment(name, seed=5)(grey.clone()))


def test_ops_drawn_for_some_samples_leave_the_others_untouched():
    x = torch.rand(32, 1, 24, 24)
    out = BatchAugment(AugmentConfig(blur=1.0, p_photometric=0.5), seed=1)(x.clone())
    unchanged = (out == x).flatten(1).all(dim=1)
    assert 4 <= int(unchanged.sum()) <= 28  # about half blurred, the rest exactly as given


def test_erosion_matches_a_square_structuring_element():
    rng = np.random.default_rng(0)
    mask = ndimage.binary_dilation(rng.random((3, 40, 40)) > 0.9, iterations=3)
    for radius in (1, 4):
        square = np.ones((1, 2 * radius + 1, 2 * radius + 1), bool)
        expected = ndimage.binary_erosion(mask, square, border_value=1)
        got = eroded(torch.from_numpy(mask).float().unsqueeze(1), radius).squeeze(1).numpy() > 0.5
        assert np.array_equal(got, expected)
