"""Classification metrics as one JSON-serialisable dict; every number matches scikit-learn.

`classification_metrics(y_true, probs, classes)` returns::

    {
      "n": 120, "classes": ["glioma", ...],
      "accuracy": 0.93, "balanced_accuracy": 0.92, "macro_f1": 0.92,
      "macro_auc": 0.98,                      # mean one-vs-rest AUC (None if undefined)
      "per_class": {"glioma": {"precision", "recall", "sensitivity", "specificity",
                               "f1", "support", "roc_auc"}, ...},
      "confusion_matrix": [[...]],            # counts, rows = true, columns = predicted
      "confusion_matrix_normalized": [[...]], # rows sum to 1 (0 for an absent class)
      "binary": {"positive", "negative", "sensitivity", "specificity",
                 "ppv", "npv", "roc_auc"},    # only with two classes
    }
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    cohen_kappa_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
)

# Normalised class names that mean "nothing found"; the other class of a binary task is positive.
NEGATIVE_NAMES = frozenset(
    {"no", "normal", "notumor", "notumour", "uninfected", "healthy", "negative", "none",
     "nofinding", "control", "absent", "benign"}
)


def normalize_name(name: str) -> str:
    """Lower-case a class name, keeping only letters and digits ("No_Tumor" -> "notumor")."""
    return re.sub(r"[^0-9a-z]", "", str(name).lower())


def check_inputs(
    y_true, probs, classes: Sequence[str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert labels (N,) and probabilities (N, K); errors say what is wrong."""
    y = np.asarray(y_true)
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"probs must be a 2-D array (samples x classes), got shape {p.shape}")
    if y.ndim != 1 or len(y) != len(p):
        raise ValueError(
            f"y_true must be 1-D with one label per row of probs: {y.shape} vs {p.shape}"
        )
    if len(y) == 0:
        raise ValueError("no samples to evaluate")
    if not np.isfinite(p).all():
        raise ValueError("probs contains NaN or infinite values")
    if classes is not None and p.shape[1] != len(classes):
        raise ValueError(f"probs has {p.shape[1]} columns but there are {len(classes)} classes")
    if not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.mod(y, 1) == 0):
            raise ValueError("y_true must hold integer class indices")
        y = y.astype(np.int64)
    if y.min() < 0 or y.max() >= p.shape[1]:
        raise ValueError(f"labels must lie in [0, {p.shape[1] - 1}], got {y.min()}..{y.max()}")
    return y.astype(np.int64), p


def specificity_from_confusion(cm: np.ndarray) -> np.ndarray:
    """Per-class specificity TN / (TN + FP) from a confusion matrix (0 where undefined)."""
    cm = np.asarray(cm, dtype=np.float64)
    total = cm.sum()
    tp = np.diag(cm)
    fp = cm.sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp
    tn = total - tp - fp - fn
    denom = tn + fp
    return np.divide(tn, denom, out=np.zeros_like(tn), where=denom > 0)


def row_normalize(cm: np.ndarray) -> np.ndarray:
    """Confusion matrix with rows summing to 1, like `confusion_matrix(normalize="true")`."""
    cm = np.asarray(cm, dtype=np.float64)
    rows = cm.sum(axis=1, keepdims=True)
    return np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)


def one_vs_rest_auc(y_true: np.ndarray, probs: np.ndarray) -> list[float | None]:
    """Per-class `roc_auc_score(y_true == k, probs[:, k])`; None if class k is absent or alone."""
    aucs: list[float | None] = []
    for k in range(probs.shape[1]):
        positive = y_true == k
        if positive.all() or not positive.any():
            aucs.append(None)
        else:
            aucs.append(float(roc_auc_score(positive, probs[:, k])))
    return aucs


def default_positive(classes: Sequence[str]) -> int:
    """Positive class of a binary task: the one not named like "no"/"normal", else index 1."""
    negative = [normalize_name(c) in NEGATIVE_NAMES for c in classes]
    if len(classes) == 2 and sum(negative) == 1:
        return negative.index(False)
    return 1


def resolve_positive(classes: Sequence[str], positive: str | int | None) -> int:
    """Index of `positive` given as a name or index; None picks `default_positive`."""
    if positive is None:
        return default_positive(classes)
    if isinstance(positive, (int, np.integer)):
        if not 0 <= positive < len(classes):
            raise ValueError(f"positive index {positive} out of range for classes {list(classes)}")
        return int(positive)
    if positive in classes:
        return list(classes).index(positive)
    raise ValueError(f"positive class {positive!r} is not one of {list(classes)}")


def binary_metrics(cm: np.ndarray, classes: Sequence[str], pos: int, auc: float | None) -> dict:
    """Sensitivity, specificity, PPV and NPV of a 2x2 confusion matrix for the positive class."""
    neg = 1 - pos
    tp, fn = cm[pos, pos], cm[pos, neg]
    fp, tn = cm[neg, pos], cm[neg, neg]

    def ratio(a: float, b: float) -> float | None:
        return float(a / b) if b > 0 else None

    return {
        "positive": classes[pos],
        "negative": classes[neg],
        "sensitivity": ratio(tp, tp + fn),
        "specificity": ratio(tn, tn + fp),
        "ppv": ratio(tp, tp + fp),
        "npv": ratio(tn, tn + fn),
        "roc_auc": auc,
    }


def mean_or_none(values: Sequence[float | None]) -> float | None:
    """Mean of the values that are not None; None if there are none."""
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def classification_metrics(
    y_true, probs, classes: Sequence[str], *, positive: str | int | None = None
) -> dict:
    """Accuracy, balanced accuracy, macro F1, per-class metrics, OvR AUC and confusion matrices.

    Matches `accuracy_score`, `balanced_accuracy_score`, `f1_score(average="macro")`,
    `precision_recall_fscore_support(labels=range(K))`, `roc_auc_score` (one-vs-rest per class)
    and `confusion_matrix`. Predictions are `probs.argmax(1)`. `macro_auc` is the mean of the
    per-class AUCs that are defined (equal to `roc_auc_score(multi_class="ovr")` when every
    class is present).
    """
    classes = [str(c) for c in classes]
    y, p = check_inputs(y_true, probs, classes)
    k = len(classes)
    labels = list(range(k))
    pred = p.argmax(axis=1)
    cm = confusion_matrix(y, pred, labels=labels)
    precision, recall, f1, support = precision_recall_fscore_support(
        y, pred, labels=labels, zero_division=0
    )
    specificity = specificity_from_confusion(cm)
    aucs = one_vs_rest_auc(y, p)
    per_class = {
        name: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "sensitivity": float(recall[i]),
            "specificity": float(specificity[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
            "roc_auc": aucs[i],
        }
        for i, name in enumerate(classes)
    }
    result = {
        "n": len(y),
        "classes": classes,
        "accuracy": float(accuracy_score(y, pred)),
        "balanced_accuracy": float(balanced_accuracy(y, pred)),
        "macro_f1": float(f1_score(y, pred, average="macro", zero_division=0)),
        "macro_auc": mean_or_none(aucs),
        "per_class": per_class,
        "confusion_matrix": cm.astype(int).tolist(),
        "confusion_matrix_normalized": row_normalize(cm).tolist(),
    }
    if k == 2:
        pos = resolve_positive(classes, positive)
        result["binary"] = binary_metrics(cm, classes, pos, aucs[pos])
    return result


def quadratic_kappa(y_true, probs) -> float | None:
    """Quadratic-weighted Cohen's kappa of `probs.argmax(1)` for ordered grades (None if undefined)."""
    y, p = check_inputs(y_true, probs)
    pred = p.argmax(axis=1)
    if len(np.union1d(y, pred)) < 2:
        return None  # one grade everywhere: agreement beyond chance is undefined
    return float(cohen_kappa_score(y, pred, weights="quadratic"))


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """`balanced_accuracy_score`: mean recall over the classes present in y_true (no warnings)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "y_pred contains classes not in y_true"
        return float(balanced_accuracy_score(y_true, y_pred))
