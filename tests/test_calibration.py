"""ECE, reliability curves, temperature scaling and selective prediction."""

import json

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy.special import softmax
from sklearn.calibration import calibration_curve
from sklearn.metrics import log_loss

from mediscan.evaluation.calibration import (
    apply_temperature,
    calibration_summary,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    reliability_curve,
    selective_prediction,
)


def calibrated_logits(seed: int, n: int, k: int = 4, spread: float = 2.0):
    """Logits whose softmax is the true class distribution; labels drawn from it."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, spread, (n, k))
    p = softmax(z, axis=1)
    y = (rng.random(n)[:, None] > np.cumsum(p, axis=1)).sum(axis=1)
    return z, np.minimum(y, k - 1)


def test_ece_hand_computed():
    # top-label confidences 0.6, 0.7, 0.9, 0.8; correct: yes, no, yes, yes
    probs = np.array([[0.6, 0.4], [0.7, 0.3], [0.9, 0.1], [0.2, 0.8]])
    y = np.array([0, 1, 0, 1])
    # n_bins=2 -> all confidences in (0.5, 1]; accuracy 3/4, mean confidence 0.75 -> ECE 0
    assert_allclose(expected_calibration_error(probs, y, n_bins=2), 0.0, atol=1e-12)
    # n_bins=10: bins (0.5,0.6]: conf .6 acc 1; (0.6,0.7]: .7 acc 0; (0.7,0.8]: .8 acc 1;
    # (0.8,0.9]: .9 acc 1 -> (0.4 + 0.7 + 0.2 + 0.1) / 4
    assert_allclose(expected_calibration_error(probs, y, n_bins=10), 1.4 / 4)


def test_ece_of_perfect_calibration_is_near_zero():
    z, y = calibrated_logits(0, 20000)
    assert expected_calibration_error(softmax(z, axis=1), y) < 0.015


def test_reliability_curve_matches_sklearn_calibration_curve():
    z, y = calibrated_logits(1, 3000)
    p = softmax(z, axis=1)
    curve = reliability_curve(p, y, n_bins=10)
    correct = (p.argmax(1) == y).astype(int)
    prob_true, prob_pred = calibration_curve(correct, p.max(1), n_bins=10, strategy="uniform")
    assert_allclose([a for a in curve["accuracy"] if a is not None], prob_true, atol=1e-12)
    assert_allclose([c for c in curve["confidence"] if c is not None], prob_pred, atol=1e-12)
    assert sum(curve["counts"]) == len(y)
    assert_allclose(curve["bin_centers"], np.arange(10) / 10 + 0.05)
    json.dumps(curve, allow_nan=False)


@pytest.mark.parametrize("scale", [2.0, 3.0, 0.5])
def test_temperature_scaling_recovers_scale_and_lowers_ece(scale):
    z, y = calibrated_logits(2, 6000)
    distorted = z * scale  # scale > 1: over-confident; < 1: under-confident
    t = fit_temperature(distorted, y)
    assert_allclose(t, scale, rtol=0.1)
    before = expected_calibration_error(apply_temperature(distorted, 1.0), y)
    after = expected_calibration_error(apply_temperature(distorted, t), y)
    assert after < before
    assert after < 0.03
    assert negative_log_likelihood(distorted, y, t) < negative_log_likelihood(distorted, y, 1.0)


def test_nll_matches_sklearn_log_loss():
    z, y = calibrated_logits(3, 500)
    assert_allclose(negative_log_likelihood(z, y, 1.7),
                    log_loss(y, softmax(z / 1.7, axis=1), labels=range(4)), rtol=1e-9)


def test_apply_temperature_is_softmax_and_rejects_bad_t():
    z = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    assert_allclose(apply_temperature(z, 2.0), softmax(z / 2.0, axis=1))
    assert_allclose(apply_temperature(z, 1.0).sum(1), 1.0)
    with pytest.raises(ValueError, match="positive"):
        apply_temperature(z, 0.0)


def test_selective_prediction_hand_computed():
    probs = np.array([[0.95, 0.05], [0.85, 0.15], [0.6, 0.4], [0.55, 0.45]])
    y = np.array([0, 1, 0, 1])
    rows = selective_prediction(probs, y, thresholds=[0.0, 0.7, 0.9, 0.99])
    assert [r["coverage"] for r in rows] == [1.0, 0.5, 0.25, 0.0]
    assert [r["accuracy"] for r in rows] == [0.5, 0.5, 1.0, None]
    assert [r["n_kept"] for r in rows] == [4, 2, 1, 0]


def test_calibration_summary_shape():
    z, y = calibrated_logits(4, 2000)
    s = calibration_summary(z * 3, y, z * 3, y)
    json.dumps(s, allow_nan=False)
    assert s["ece_after"] < s["ece_before"]
    assert s["reliability_after"]["ece"] == s["ece_after"]
    assert_allclose(s["temperature"], 3.0, rtol=0.15)
