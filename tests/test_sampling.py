"""Epoch draws: permutations, class-balanced draws, and draws balanced over classes and groups of look-alikes."""

import numpy as np
import pytest
import torch

from mediscan.data.shortcuts import FEATURES, NUMERIC, measure
from mediscan.training.recipes import get_recipe
from mediscan.training.sampling import (
    MAX_RATIO,
    epoch_order,
    group_shares,
    intensity_groups,
    intensity_signature,
    largest_group_gap,
    layout_groups,
    layout_signature,
    sampling_weights,
)


def _class_totals(labels: np.ndarray, weights: torch.Tensor) -> np.ndarray:
    return np.bincount(labels, weights=weights.numpy())


def test_plain_permutation_without_weights():
    assert sampling_weights(np.array([0, 0, 1]), "none") is None
    order = epoch_order(5, None, torch.Generator().manual_seed(0))
    assert sorted(order.tolist()) == [0, 1, 2, 3, 4]


def test_class_balanced_draws():
    labels = np.array([0] * 90 + [1] * 10)
    weights = sampling_weights(labels, "sampler")
    np.testing.assert_allclose(weights.numpy(), np.where(labels == 0, 1 / 90, 1 / 10), rtol=1e-6)
    np.testing.assert_allclose(_class_totals(labels, weights), [1.0, 1.0], rtol=1e-6)
    drawn = labels[epoch_order(20_000, weights, torch.Generator().manual_seed(0)).numpy()]
    assert abs(drawn.mean() - 0.5) < 0.02


def test_source_balanced_draws_follow_the_overall_group_shares():
    """Class 0 mostly from group 0, class 1 mostly from group 1: the draws of each class come
    closer to the overall 50/50, each class is still drawn half the time, no ratio beyond the cap."""
    labels = np.array([0] * 100 + [1] * 100)
    groups = np.array([0] * 80 + [1] * 20 + [0] * 30 + [1] * 70)
    weights = sampling_weights(labels, "sources", groups)
    np.testing.assert_allclose(_class_totals(labels, weights), [1.0, 1.0], rtol=1e-6)
    before, after = group_shares(labels, groups), group_shares(labels, groups, weights)
    overall = np.bincount(groups) / len(groups)
    np.testing.assert_allclose(before[:, 0], [0.8, 0.3])
    np.testing.assert_allclose(after, np.tile(overall, (2, 1)), atol=1e-9)  # within the cap: exact
    assert largest_group_gap(labels, groups) == pytest.approx(0.25)  # 80% and 30% against 55% in group 0
    assert largest_group_gap(labels, groups, weights) == pytest.approx(0.0, abs=1e-6)
    per_image = weights.numpy()
    assert per_image.max() / per_image.min() <= MAX_RATIO ** 2 + 1e-9


def test_source_ratio_is_capped_for_a_rare_group():
    labels = np.array([0] * 100 + [1] * 100)
    groups = np.array([0] * 99 + [1] + [1] * 100)  # class 0 has one image of the common group 1
    weights = sampling_weights(labels, "sources", groups).numpy()
    assert weights[99] / weights[0] == pytest.approx(MAX_RATIO / ((99 / 200) / 0.99))


def _heads(n: int, inside: int, rng: np.random.Generator) -> np.ndarray:
    """n (1, 32, 32) images: a bright disc of level ~inside on black."""
    yy, xx = np.mgrid[:32, :32]
    disc = (yy - 16) ** 2 + (xx - 16) ** 2 < 12 ** 2
    images = np.zeros((n, 1, 32, 32), np.uint8)
    for image in images:
        image[0][disc] = np.clip(rng.normal(inside, 10, disc.sum()), 30, 255)
        image[0][disc & (xx < 16)] //= 3  # a darker half: the histogram's shape, not only its gain
    return images


def test_intensity_groups_separate_two_contrasts():
    rng = np.random.default_rng(0)
    images = np.concatenate([_heads(20, 200, rng), _heads(20, 90, rng)])
    images[20:, 0][images[20:, 0] > 0] = 255 - images[20:, 0][images[20:, 0] > 0]  # inverted contrast
    groups = intensity_groups(images, groups=2)
    assert len(set(groups[:20])) == 1 and len(set(groups[20:])) == 1 and groups[0] != groups[20]


def test_intensity_signature_is_the_audits_at_any_input_size():
    """The same numbers `inspect`'s audit measures, also for images larger than its working side (224 px)."""
    rng = np.random.default_rng(1)
    for side in (32, 224):
        grey = _heads(1, 150, rng)[0, 0]
        grey = np.kron(grey, np.ones((side // 32, side // 32), np.uint8))
        audit = measure(grey)
        expected = [audit[FEATURES.index(name)] for name in NUMERIC["intensity"]]
        np.testing.assert_allclose(intensity_signature(np.stack([grey] * 3)), expected)
    images = np.kron(np.concatenate([_heads(4, 200, rng), _heads(4, 60, rng)]), np.ones((1, 1, 7, 7), np.uint8))
    groups = intensity_groups(images, groups=2)  # 224-px inputs (the GPU recipe's size)
    assert len(set(groups[:4])) == 1 and len(set(groups[4:])) == 1 and groups[0] != groups[4]


def test_unknown_balance_is_refused_by_name():
    refusal = "balance 'classes' is not one of none, weights, sampler, sources, layout, auto"
    with pytest.raises(ValueError, match=refusal):
        get_recipe("cpu").with_overrides(balance="classes")


def _ellipses(n: int, half_height: int, half_width: int, rng: np.random.Generator) -> np.ndarray:
    """n (3, 64, 64) grey images: a noisy ellipse of random brightness on black (a head in one view)."""
    yy, xx = np.mgrid[:64, :64]
    inside = ((yy - 32) / half_height) ** 2 + ((xx - 32) / half_width) ** 2 < 1
    images = np.zeros((n, 3, 64, 64), np.uint8)
    for image in images:
        image[:, inside] = np.clip(rng.normal(rng.uniform(60, 220), 15, inside.sum()), 1, 255)
    return images


def test_layout_groups_follow_the_view_not_the_brightness():
    """Wide and tall heads of any brightness: two groups, one per shape (axial against sagittal-like)."""
    rng = np.random.default_rng(0)
    images = np.concatenate([_ellipses(12, 20, 28, rng), _ellipses(12, 28, 16, rng)])
    groups = layout_groups(images, groups=2)
    assert len(set(groups[:12])) == 1 and len(set(groups[12:])) == 1 and groups[0] != groups[12]
    darker = images[0] // 2
    np.testing.assert_allclose(layout_signature(darker), layout_signature(images[0]), atol=0.05)
    assert layout_signature(np.zeros((1, 64, 64), np.uint8)).shape == (256,)
    assert not layout_signature(np.zeros((1, 64, 64), np.uint8)).any()


def test_layout_balance_draws_a_rare_view_of_a_class_more_often():
    """Class 0 (normal) is mostly wide heads, class 1 mostly tall ones: its few tall heads are drawn more."""
    rng = np.random.default_rng(1)
    images = np.concatenate([_ellipses(36, 20, 28, rng), _ellipses(4, 28, 16, rng),
                             _ellipses(10, 20, 28, rng), _ellipses(30, 28, 16, rng)])
    labels = np.array([0] * 40 + [1] * 40)
    groups = layout_groups(images, groups=2)
    weights = sampling_weights(labels, "layout", groups).numpy()
    np.testing.assert_allclose(_class_totals(labels, torch.from_numpy(weights)), [1.0, 1.0], rtol=1e-6)
    assert weights[36] / weights[0] > 3  # a tall normal head against a wide one
    assert largest_group_gap(labels, groups, torch.from_numpy(weights)) < largest_group_gap(labels, groups) / 2
