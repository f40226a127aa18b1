"""Uncertainty of metrics: percentile bootstrap intervals, McNemar's test, Wilson intervals.

Resamples are drawn as index matrices with numpy (stratified by true class by default, so
every resample keeps the class counts of the test set and one-vs-rest AUC stays defined).
The headline metrics are computed for all resamples at once from per-resample confusion
matrices and tie-aware rank sums; any other metric is looped.

`metrics_with_ci(...)` returns `classification_metrics(...)` (see `metrics.py`) plus::

    "headline": {"accuracy": {"value": 0.93, "ci": [0.90, 0.95]},
                 "balanced_accuracy": {...}, "macro_f1": {...}, "macro_auc": {...},
                 "sensitivity": {...}, "specificity": {...}},  # last two: binary only,
                                                              # for the positive class
    "per_class": {name: {..., "ci": {"sensitivity": [lo, hi], "specificity": [lo, hi],
                                     "precision": [lo, hi], "f1": [lo, hi],
                                     "roc_auc": [lo, hi] | None}}},
    "bootstrap": {"method": "percentile", "n_resamples": 1000, "seed": 0,
                  "level": 0.95, "stratified": true}

A value or interval that is undefined (e.g. AUC of a class absent from the test set) is None.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from itertools import combinations

import numpy as np
from scipy import stats as sps

from mediscan.evaluation.metrics import check_inputs, classification_metrics, resolve_positive

MetricFn = Callable[[np.ndarray, np.ndarray], float]
HEADLINE = ("accuracy", "balanced_accuracy", "macro_f1", "macro_auc")
PER_CLASS_CI = ("sensitivity", "specificity", "precision", "f1", "roc_auc")
MAX_CHUNK_ELEMENTS = 4_000_000  # resamples x samples held in memory at once


# ---------------------------------------------------------------------------- resampling
def iter_resamples(
    y_true, n_resamples: int, *, seed: int = 0, stratified: bool = True
) -> Iterator[np.ndarray]:
    """Yield (b, n) index matrices, b <= n_resamples in total; stratified keeps class counts."""
    y = np.asarray(y_true)
    n = len(y)
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(y == c) for c in np.unique(y)] if stratified else [np.arange(n)]
    chunk = max(1, MAX_CHUNK_ELEMENTS // max(n, 1))
    done = 0
    while done < n_resamples:
        b = min(chunk, n_resamples - done)
        parts = [g[rng.integers(0, len(g), size=(b, len(g)))] for g in groups]
        yield np.concatenate(parts, axis=1)
        done += b


def resample_counts(idx: np.ndarray, n: int) -> np.ndarray:
    """(b, n) matrix: how often each original sample occurs in each resample."""
    b = idx.shape[0]
    flat = (idx + np.arange(b)[:, None] * n).ravel()
    return np.bincount(flat, minlength=b * n).reshape(b, n).astype(np.float64)


def percentile_interval(samples, level: float = 0.95) -> list[float] | None:
    """Percentile interval of bootstrap samples, ignoring NaN; None if nothing is finite."""
    s = np.asarray(samples, dtype=np.float64)
    s = s[np.isfinite(s)]
    if s.size == 0:
        return None
    alpha = (1.0 - level) / 2.0
    lo, hi = np.percentile(s, [100 * alpha, 100 * (1 - alpha)])
    return [float(lo), float(hi)]


# ------------------------------------------------------- batched metrics over resamples
def _safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.divide(a, b, out=np.full(np.broadcast(a, b).shape, np.nan), where=b > 0)


def batch_confusion(
    counts: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray, k: int
) -> np.ndarray:
    """(b, k, k) confusion matrices of weighted resamples (`confusion_matrix` per row)."""
    onehot = np.zeros((len(y_true), k * k))
    onehot[np.arange(len(y_true)), y_true * k + y_pred] = 1.0
    return (counts @ onehot).reshape(-1, k, k)


def batch_auc(counts: np.ndarray, positive: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """(b,) `roc_auc_score(positive, scores)` of weighted resamples; ties count one half."""
    order = np.argsort(scores, kind="stable")
    s = scores[order]
    starts = np.concatenate([[0], np.flatnonzero(np.diff(s) != 0) + 1])
    ends = np.concatenate([starts[1:], [len(s)]])
    w = counts[:, order]
    pos = positive[order].astype(np.float64)

    def group_sums(x: np.ndarray) -> np.ndarray:
        c = np.concatenate([np.zeros((x.shape[0], 1)), np.cumsum(x, axis=1)], axis=1)
        return c[:, ends] - c[:, starts]

    pos_g = group_sums(w * pos)
    neg_g = group_sums(w * (1.0 - pos))
    neg_below = np.cumsum(neg_g, axis=1) - neg_g
    numerator = (pos_g * (neg_below + 0.5 * neg_g)).sum(axis=1)
    return _safe_div(numerator, pos_g.sum(axis=1) * neg_g.sum(axis=1))


def metrics_from_confusion(cms: np.ndarray) -> dict[str, np.ndarray]:
    """Batched accuracy, balanced accuracy, macro F1 and per-class rates from (b, k, k)."""
    tp = np.diagonal(cms, axis1=1, axis2=2)
    rows, cols = cms.sum(axis=2), cms.sum(axis=1)
    total = cms.sum(axis=(1, 2))
    fp, fn = cols - tp, rows - tp
    tn = total[:, None] - tp - fp - fn
    recall = _safe_div(tp, rows)
    f1_denom = 2 * tp + fp + fn
    f1 = _safe_div(2 * tp, f1_denom)  # NaN only when the class is absent from truth and prediction
    present = rows > 0
    return {
        "accuracy": tp.sum(axis=1) / total,
        "balanced_accuracy": np.where(present, np.nan_to_num(recall), 0).sum(1) / present.sum(1),
        "macro_f1": np.nanmean(np.where(f1_denom > 0, f1, np.nan), axis=1),
        "sensitivity": recall,
        "specificity": _safe_div(tn, tn + fp),
        "precision": np.where(cols > 0, _safe_div(tp, cols), np.where(present, 0.0, np.nan)),
        "f1": np.where(present | (cols > 0), np.nan_to_num(f1), np.nan),
    }


def bootstrap_distributions(
    y_true, probs, *, n_resamples: int = 1000, seed: int = 0, stratified: bool = True
) -> dict[str, np.ndarray]:
    """Bootstrap samples of the headline metrics, (R,) or per class (R, K), all at once."""
    y, p = check_inputs(y_true, probs)
    k = p.shape[1]
    pred = p.argmax(axis=1)
    chunks: list[dict[str, np.ndarray]] = []
    for idx in iter_resamples(y, n_resamples, seed=seed, stratified=stratified):
        counts = resample_counts(idx, len(y))
        out = metrics_from_confusion(batch_confusion(counts, y, pred, k))
        out["roc_auc"] = np.stack([batch_auc(counts, y == c, p[:, c]) for c in range(k)], axis=1)
        defined = np.isfinite(out["roc_auc"])
        out["macro_auc"] = _safe_div(np.where(defined, out["roc_auc"], 0).sum(1), defined.sum(1))
        chunks.append(out)
    return {key: np.concatenate([c[key] for c in chunks]) for key in chunks[0]}


# ----------------------------------------------------------------------- public API
def accuracy(y_true: np.ndarray, probs: np.ndarray) -> float:
    """`accuracy_score(y_true, probs.argmax(1))`."""
    return float(np.mean(np.asarray(probs).argmax(axis=1) == y_true))


def bootstrap_ci(
    y_true,
    probs,
    metric_fn: MetricFn | str,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    stratified: bool = True,
    level: float = 0.95,
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of `metric_fn(y_true, probs)` (like `scipy.stats.bootstrap`
    with method="percentile"). A string names a headline metric ("accuracy",
    "balanced_accuracy", "macro_f1", "macro_auc"), computed vectorised; a callable is looped.
    Resamples where the metric fails (ValueError) or returns None are ignored."""
    y, p = check_inputs(y_true, probs)
    if isinstance(metric_fn, str):
        if metric_fn not in HEADLINE:
            raise ValueError(f"unknown metric {metric_fn!r}; choose one of {', '.join(HEADLINE)}")
        dist = bootstrap_distributions(y, p, n_resamples=n_resamples, seed=seed,
                                       stratified=stratified)
        samples = dist[metric_fn]
    else:
        values = []
        for idx in iter_resamples(y, n_resamples, seed=seed, stratified=stratified):
            for row in idx:
                try:
                    v = metric_fn(y[row], p[row])
                except ValueError:
                    v = None
                values.append(np.nan if v is None else float(v))
        samples = np.asarray(values)
    interval = percentile_interval(samples, level)
    return None if interval is None else (interval[0], interval[1])


def _with_ci(value: float | None, samples: np.ndarray, level: float) -> dict:
    return {"value": value, "ci": None if value is None else percentile_interval(samples, level)}


def metrics_with_ci(
    y_true,
    probs,
    classes: Sequence[str],
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    stratified: bool = True,
    positive: str | int | None = None,
) -> dict:
    """`classification_metrics` plus percentile bootstrap intervals of the headline metrics."""
    result = classification_metrics(y_true, probs, classes, positive=positive)
    dist = bootstrap_distributions(y_true, probs, n_resamples=n_resamples, seed=seed,
                                   stratified=stratified)
    headline = {m: _with_ci(result[m], dist[m], level) for m in HEADLINE}
    for i, name in enumerate(result["classes"]):
        entry = result["per_class"][name]
        entry["ci"] = {
            m: None if entry[m] is None else percentile_interval(dist[m][:, i], level)
            for m in PER_CLASS_CI
        }
    if "binary" in result:
        pos = resolve_positive(result["classes"], positive)
        neg = 1 - pos
        headline["sensitivity"] = _with_ci(result["binary"]["sensitivity"],
                                           dist["sensitivity"][:, pos], level)
        headline["specificity"] = _with_ci(result["binary"]["specificity"],
                                           dist["sensitivity"][:, neg], level)
    result["headline"] = headline
    result["bootstrap"] = {"method": "percentile", "n_resamples": int(n_resamples),
                           "seed": int(seed), "level": float(level), "stratified": stratified}
    return result


def mcnemar(y_true, pred_a, pred_b) -> dict:
    """McNemar's test on paired predictions (as `statsmodels...mcnemar`): exact binomial
    (`scipy.stats.binomtest`) when b + c < 25, else chi-square with continuity correction.
    b = A right and B wrong, c = A wrong and B right."""
    y, a, bb = (np.asarray(v) for v in (y_true, pred_a, pred_b))
    if not (y.shape == a.shape == bb.shape) or y.ndim != 1:
        raise ValueError(f"y_true, pred_a and pred_b must be 1-D of one length: "
                         f"{y.shape}, {a.shape}, {bb.shape}")
    right_a, right_b = a == y, bb == y
    b = int(np.sum(right_a & ~right_b))
    c = int(np.sum(~right_a & right_b))
    if b + c == 0:
        return {"b": b, "c": c, "statistic": 0.0, "p_value": 1.0, "method": "exact"}
    if b + c < 25:
        p = sps.binomtest(b, b + c, 0.5, alternative="two-sided").pvalue
        return {"b": b, "c": c, "statistic": float(min(b, c)), "p_value": float(p),
                "method": "exact"}
    stat = (abs(b - c) - 1.0) ** 2 / (b + c)
    return {"b": b, "c": c, "statistic": float(stat), "p_value": float(sps.chi2.sf(stat, 1)),
            "method": "chi2-corrected"}


def pairwise_mcnemar(y_true, predictions: dict[str, np.ndarray]) -> list[dict]:
    """McNemar's test for every pair of named prediction vectors on the same samples."""
    rows = []
    for name_a, name_b in combinations(predictions, 2):
        test = mcnemar(y_true, predictions[name_a], predictions[name_b])
        rows.append({"model_a": name_a, "model_b": name_b, **test})
    return rows


def wilson_interval(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion (`statsmodels proportion_confint(method="wilson")`)."""
    if n <= 0:
        raise ValueError("n must be positive")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must lie in [0, {n}], got {successes}")
    z = sps.norm.ppf(0.5 + level / 2)
    phat = successes / n
    denom = 1 + z * z / n
    centre = (phat + z * z / (2 * n)) / denom
    half = z * math.sqrt(phat * (1 - phat) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))
