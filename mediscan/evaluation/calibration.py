"""Calibration: expected calibration error, reliability curves, temperature scaling, abstention.

`calibration_summary(val_logits, val_y, test_logits, test_y)` returns the block the run's
`metrics.json` stores under "calibration"::

    {"temperature": 1.7, "n_bins": 15,
     "ece_before": 0.08, "ece_after": 0.02,          # on the test split
     "nll_before": 0.41, "nll_after": 0.30,
     "reliability_before": <reliability_curve>, "reliability_after": <reliability_curve>}

`selective_prediction` gives the "selective" list:
`[{"threshold": 0.9, "coverage": 0.8, "accuracy": 0.99, "n_kept": 80}, ...]`, and
`abstain_summary` the "abstain" block for one threshold (`mediscan evaluate --abstain-below`)::

    {"threshold": 0.8, "n": 571, "n_kept": 521, "n_uncertain": 50,
     "coverage": {"value": 0.912, "ci": [0.89, 0.93]},     # percentile bootstrap, as stats.py
     "accuracy": {"value": 0.991, "ci": [0.98, 1.0]}}      # on the kept; None if none is kept
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

from mediscan.evaluation.metrics import check_inputs
from mediscan.evaluation.stats import bootstrap_ci

DEFAULT_THRESHOLDS = (0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
TEMPERATURE_BOUNDS = (0.05, 20.0)


def _bin_index(confidence: np.ndarray, n_bins: int) -> np.ndarray:
    """Equal-width bins (lo, hi] over [0, 1]; a confidence of 0 falls in the first bin."""
    return np.clip(np.ceil(confidence * n_bins).astype(int) - 1, 0, n_bins - 1)


def reliability_curve(probs, y_true, n_bins: int = 15) -> dict:
    """Top-label reliability diagram data (`sklearn.calibration.calibration_curve` for the
    top label, uniform bins): bin centres, accuracy, mean confidence and counts per bin.
    Empty bins have accuracy and confidence None."""
    y, p = check_inputs(y_true, probs)
    confidence = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    bins = _bin_index(confidence, n_bins)
    counts = np.bincount(bins, minlength=n_bins)
    acc_sum = np.bincount(bins, weights=correct, minlength=n_bins)
    conf_sum = np.bincount(bins, weights=confidence, minlength=n_bins)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    nonempty = counts > 0
    accuracy = np.divide(acc_sum, counts, out=np.zeros(n_bins), where=nonempty)
    mean_conf = np.divide(conf_sum, counts, out=np.zeros(n_bins), where=nonempty)
    gaps = np.abs(accuracy - mean_conf) * counts / len(y)
    return {
        "n_bins": int(n_bins),
        "bin_edges": edges.tolist(),
        "bin_centers": ((edges[:-1] + edges[1:]) / 2).tolist(),
        "accuracy": [float(a) if ok else None for a, ok in zip(accuracy, nonempty)],
        "confidence": [float(c) if ok else None for c, ok in zip(mean_conf, nonempty)],
        "counts": counts.astype(int).tolist(),
        "ece": float(gaps.sum()),
        "n": len(y),
    }


def expected_calibration_error(probs, y_true, n_bins: int = 15) -> float:
    """Top-label ECE with equal-width bins: sum_b |acc_b - conf_b| * n_b / N (Guo et al. 2017)."""
    return reliability_curve(probs, y_true, n_bins)["ece"]


def _scaled(logits, temperature: float, bias) -> np.ndarray:
    """logits / T + bias (the bundle's class bias, training.decision_prior; None: none)."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    return z if bias is None else z + np.asarray(bias, dtype=np.float64)


def negative_log_likelihood(logits, y_true, temperature: float = 1.0, bias=None) -> float:
    """Mean cross-entropy of softmax(logits / T + bias) (`sklearn.metrics.log_loss` on those probs)."""
    y = np.asarray(y_true, dtype=np.int64)
    return float(-log_softmax(_scaled(logits, temperature, bias), axis=1)[np.arange(len(y)), y].mean())


def fit_temperature(logits, y_true, bias=None) -> float:
    """Temperature T > 0 minimising the NLL of softmax(logits / T + bias) (Guo et al. 2017), found by
    `scipy.optimize.minimize_scalar` (bounded) on log T."""
    z, y = np.asarray(logits, dtype=np.float64), np.asarray(y_true, dtype=np.int64)
    check_inputs(y, z)
    lo, hi = np.log(TEMPERATURE_BOUNDS)
    res = minimize_scalar(lambda log_t: negative_log_likelihood(z, y, float(np.exp(log_t)), bias),
                          bounds=(lo, hi), method="bounded", options={"xatol": 1e-6})
    return float(np.exp(res.x))


def apply_temperature(logits, temperature: float = 1.0, bias=None) -> np.ndarray:
    """softmax(logits / T + bias) (`scipy.special.softmax`); `bias` None: no shift."""
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    return softmax(_scaled(logits, temperature, bias), axis=1)


def selective_prediction(
    probs, y_true, thresholds: Sequence[float] = DEFAULT_THRESHOLDS
) -> list[dict]:
    """Coverage and accuracy when predictions with top probability below each threshold abstain."""
    y, p = check_inputs(y_true, probs)
    confidence = p.max(axis=1)
    correct = p.argmax(axis=1) == y
    rows = []
    for t in thresholds:
        kept = confidence >= t
        n_kept = int(kept.sum())
        rows.append({
            "threshold": float(t),
            "coverage": n_kept / len(y),
            "accuracy": float(correct[kept].mean()) if n_kept else None,
            "n_kept": n_kept,
        })
    return rows


def check_abstain_threshold(threshold: float) -> float:
    """The threshold as a float if it lies in [0, 1); otherwise a ValueError saying what it means."""
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"the abstain threshold must lie in [0, 1), got {threshold}: predictions whose "
                         "top probability is below it are marked uncertain, e.g. 0.8")
    return float(threshold)


def _selective_at(y_true, probs, *, threshold: float, key: str) -> float | None:
    """One field ("coverage" or "accuracy") of `selective_prediction` at one threshold."""
    return selective_prediction(probs, y_true, (threshold,))[0][key]


def abstain_summary(probs, y_true, threshold: float, *, n_resamples: int = 1000, seed: int = 0) -> dict:
    """Coverage and accuracy on the kept predictions at one threshold, with bootstrap intervals."""
    row = selective_prediction(probs, y_true, (check_abstain_threshold(threshold),))[0]
    n = len(y_true)
    block = {"threshold": row["threshold"], "n": n, "n_kept": row["n_kept"],
             "n_uncertain": n - row["n_kept"]}
    for key in ("coverage", "accuracy"):
        ci = None if row[key] is None else bootstrap_ci(
            y_true, probs, partial(_selective_at, threshold=threshold, key=key),
            n_resamples=n_resamples, seed=seed)
        block[key] = {"value": row[key], "ci": None if ci is None else list(ci)}
    return block


def calibration_summary(val_logits, val_y, test_logits, test_y, n_bins: int = 15, bias=None) -> dict:
    """Fit T on validation logits (with the bundle's class `bias`); ECE, NLL and reliability curves on
    test before (the raw softmax) and after (T and bias)."""
    t = fit_temperature(val_logits, val_y, bias)
    before = reliability_curve(apply_temperature(test_logits, 1.0), test_y, n_bins)
    after = reliability_curve(apply_temperature(test_logits, t, bias), test_y, n_bins)
    return {
        "temperature": t,
        "n_bins": int(n_bins),
        "ece_before": before["ece"],
        "ece_after": after["ece"],
        "nll_before": negative_log_likelihood(test_logits, test_y, 1.0),
        "nll_after": negative_log_likelihood(test_logits, test_y, t, bias),
        "reliability_before": before,
        "reliability_after": after,
    }
