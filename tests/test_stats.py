"""Bootstrap intervals (vectorised == looped, right coverage), McNemar and Wilson by hand."""

import json
import math

import numpy as np
import pytest
from numpy.testing import assert_allclose

from mediscan.evaluation.metrics import classification_metrics
from mediscan.evaluation.stats import (
    accuracy,
    bootstrap_ci,
    bootstrap_distributions,
    iter_resamples,
    mcnemar,
    metrics_with_ci,
    pairwise_mcnemar,
    wilson_interval,
)


def model_output(seed: int, n: int, k: int, ties: bool = False):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    p = rng.dirichlet(np.ones(k), n)
    p[np.arange(n), y] += 0.4
    p /= p.sum(1, keepdims=True)
    return y, (np.round(p, 1) if ties else p)


@pytest.mark.parametrize("seed, n, k, ties, stratified", [
    (0, 60, 2, False, True), (1, 150, 4, False, True), (2, 90, 3, True, True),
    (3, 80, 4, True, False),
])
def test_vectorised_bootstrap_equals_sklearn_per_resample(seed, n, k, ties, stratified):
    y, p = model_output(seed, n, k, ties)
    classes = [f"c{i}" for i in range(k)]
    dist = bootstrap_distributions(y, p, n_resamples=25, seed=seed, stratified=stratified)
    idx = np.concatenate(list(iter_resamples(y, 25, seed=seed, stratified=stratified)))
    for r in range(25):
        m = classification_metrics(y[idx[r]], p[idx[r]], classes)
        for key in ("accuracy", "balanced_accuracy", "macro_f1"):
            assert_allclose(dist[key][r], m[key], rtol=0, atol=1e-12)
        for i, name in enumerate(classes):
            c = m["per_class"][name]
            auc = np.nan if c["roc_auc"] is None else c["roc_auc"]
            assert_allclose(dist["roc_auc"][r, i], auc, rtol=0, atol=1e-12)
            if c["support"]:
                assert_allclose([dist["sensitivity"][r, i], dist["specificity"][r, i],
                                 dist["precision"][r, i], dist["f1"][r, i]],
                                [c["sensitivity"], c["specificity"], c["precision"], c["f1"]],
                                rtol=0, atol=1e-12)
        if m["macro_auc"] is not None:
            assert_allclose(dist["macro_auc"][r], m["macro_auc"], rtol=0, atol=1e-12)


def test_stratified_resamples_keep_class_counts():
    y = np.array([0] * 30 + [1] * 7 + [2] * 3)
    for idx in iter_resamples(y, 50, seed=1, stratified=True):
        for row in idx:
            assert np.bincount(y[row], minlength=3).tolist() == [30, 7, 3]


def test_named_metric_equals_looped_callable_and_is_seeded():
    y, p = model_output(5, 120, 3)
    fast = bootstrap_ci(y, p, "accuracy", n_resamples=300, seed=3)
    slow = bootstrap_ci(y, p, accuracy, n_resamples=300, seed=3)
    assert_allclose(fast, slow)
    assert bootstrap_ci(y, p, "accuracy", n_resamples=300, seed=3) == fast
    assert bootstrap_ci(y, p, "accuracy", n_resamples=300, seed=4) != fast
    lo, hi = fast
    assert lo <= accuracy(y, p) <= hi


def test_unknown_metric_name_lists_options():
    y, p = model_output(0, 20, 2)
    with pytest.raises(ValueError, match="macro_auc"):
        bootstrap_ci(y, p, "kappa")


def test_ci_covers_true_accuracy_about_95_percent():
    # 300 test sets of n=200 from a model whose true accuracy is 0.85
    rng = np.random.default_rng(2024)
    true_acc, n, draws, covered = 0.85, 200, 300, 0
    for d in range(draws):
        y = rng.integers(0, 2, n)
        correct = rng.random(n) < true_acc
        pred = np.where(correct, y, 1 - y)
        probs = np.eye(2)[pred] * 0.8 + 0.1
        lo, hi = bootstrap_ci(y, probs, "accuracy", n_resamples=300, seed=d)
        covered += lo <= true_acc <= hi
    assert 0.90 <= covered / draws <= 0.99


def test_ci_width_shrinks_with_n():
    widths = []
    for n in (100, 1600):
        y, p = model_output(7, n, 3)
        lo, hi = bootstrap_ci(y, p, "accuracy", n_resamples=400)
        widths.append(hi - lo)
    assert widths[1] < widths[0] / 2.5  # ~ 1/sqrt(16) = 1/4


def test_metrics_with_ci_shape_and_values():
    y, p = model_output(11, 160, 4)
    classes = ["glioma", "meningioma", "notumor", "pituitary"]
    m = metrics_with_ci(y, p, classes, n_resamples=200, seed=0)
    json.dumps(m, allow_nan=False)
    assert set(m["headline"]) == {"accuracy", "balanced_accuracy", "macro_f1", "macro_auc"}
    for key, entry in m["headline"].items():
        assert entry["value"] == m[key]
        lo, hi = entry["ci"]
        assert lo <= entry["value"] <= hi
    for name in classes:
        ci = m["per_class"][name]["ci"]
        assert set(ci) == {"sensitivity", "specificity", "precision", "f1", "roc_auc"}
        assert ci["sensitivity"][0] <= m["per_class"][name]["sensitivity"] <= ci["sensitivity"][1]
    assert m["bootstrap"] == {"method": "percentile", "n_resamples": 200, "seed": 0,
                              "level": 0.95, "stratified": True}


def test_metrics_with_ci_binary_headline_uses_positive_class():
    y, p = model_output(12, 100, 2)
    m = metrics_with_ci(y, p, ["no", "yes"], n_resamples=100)
    assert m["headline"]["sensitivity"]["value"] == m["per_class"]["yes"]["sensitivity"]
    assert m["headline"]["specificity"]["value"] == m["per_class"]["no"]["sensitivity"]
    assert m["headline"]["sensitivity"]["ci"] == m["per_class"]["yes"]["ci"]["sensitivity"]


def test_absent_class_gives_none_not_nan():
    y = np.array([0, 0, 1, 1, 0, 1])
    p = np.full((6, 3), 0.1)
    p[np.arange(6), y] = 0.8
    m = metrics_with_ci(y, p, ["a", "b", "c"], n_resamples=50)
    assert m["per_class"]["c"]["roc_auc"] is None
    assert m["per_class"]["c"]["ci"]["roc_auc"] is None
    json.dumps(m, allow_nan=False)


def paired(b: int, c: int, both_right: int = 5, both_wrong: int = 3):
    """Predictions with b (A right, B wrong) and c (A wrong, B right) discordant pairs."""
    y = np.zeros(b + c + both_right + both_wrong, dtype=int)
    a = np.array([0] * b + [1] * c + [0] * both_right + [1] * both_wrong)
    bb = np.array([1] * b + [0] * c + [0] * both_right + [1] * both_wrong)
    return y, a, bb


@pytest.mark.parametrize("b, c, p_value, method", [
    (3, 7, 2 * (1 + 10 + 45 + 120) / 1024, "exact"),       # 2 P(X <= 3), X ~ Bin(10, 1/2)
    (0, 5, 2 / 32, "exact"),                                # 2 * (1/2)^5
    (5, 5, 1.0, "exact"),
    (0, 0, 1.0, "exact"),
    (1, 0, 1.0, "exact"),
    (10, 20, math.erfc(math.sqrt(81 / 30 / 2)), "chi2-corrected"),   # (|10-20|-1)^2/30 = 2.7
    (40, 20, math.erfc(math.sqrt(361 / 60 / 2)), "chi2-corrected"),  # (|40-20|-1)^2/60
])
def test_mcnemar_hand_computed(b, c, p_value, method):
    r = mcnemar(*paired(b, c))
    assert (r["b"], r["c"], r["method"]) == (b, c, method)
    assert_allclose(r["p_value"], p_value, rtol=1e-10)
    if method == "chi2-corrected":
        assert_allclose(r["statistic"], (abs(b - c) - 1) ** 2 / (b + c))


def test_pairwise_mcnemar_names_pairs():
    y, a, bb = paired(3, 7)
    rows = pairwise_mcnemar(y, {"m1": a, "m2": bb, "m3": y})
    assert [(r["model_a"], r["model_b"]) for r in rows] == [("m1", "m2"), ("m1", "m3"),
                                                            ("m2", "m3")]


@pytest.mark.parametrize("k, n, expected", [
    (8, 10, (0.4901625, 0.9433178)),   # Wilson 95% for 8/10
    (0, 10, (0.0, 0.2775328)),
    (10, 10, (0.7224672, 1.0)),
    (50, 100, (0.4038315, 0.5961685)),
])
def test_wilson_interval(k, n, expected):
    assert_allclose(wilson_interval(k, n), expected, atol=1e-6)
