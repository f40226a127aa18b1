"""Epoch draws: permutations, class-balanced draws, and draws balanced over classes and intensity groups."""

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
    with pytest.raises(ValueError, match="balance 'classes' is not one of none, weights, sampler, sources"):
        get_recipe("cpu").with_overrides(balance="classes")
