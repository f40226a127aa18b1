"""classification_metrics agrees with scikit-learn (tables of random cases) and by hand."""

import json
import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    multilabel_confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
)

from mediscan.evaluation.metrics import classification_metrics, default_positive

TOL = {"rtol": 0, "atol": 1e-9}


def random_case(seed: int, n: int, k: int, *, absent: int | None = None, ties: bool = False):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    if absent is not None:
        y[y == absent] = (absent + 1) % k
    p = rng.dirichlet(np.ones(k), n)
    p[np.arange(n), y] += rng.uniform(0, 0.6, n)  # a better-than-chance model
    p /= p.sum(axis=1, keepdims=True)
    if ties:
        p = np.round(p, 1)
    return y, p, [f"c{i}" for i in range(k)]


CASES = [
    {"seed": 0, "n": 50, "k": 2},
    {"seed": 1, "n": 200, "k": 3},
    {"seed": 2, "n": 500, "k": 4},
    {"seed": 3, "n": 37, "k": 5},
    {"seed": 4, "n": 300, "k": 4, "ties": True},
    {"seed": 5, "n": 120, "k": 4, "absent": 2},
    {"seed": 6, "n": 15, "k": 3, "ties": True},
    {"seed": 7, "n": 1000, "k": 10},
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"n{c['n']}k{c['k']}s{c['seed']}")
def test_matches_sklearn(case):
    y, p, classes = random_case(**case)
    labels = list(range(len(classes)))
    pred = p.argmax(1)
    m = classification_metrics(y, p, classes)

    assert m["n"] == len(y)
    assert_allclose(m["accuracy"], accuracy_score(y, pred), **TOL)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # y_pred holds a class absent from y_true
        assert_allclose(m["balanced_accuracy"], balanced_accuracy_score(y, pred), **TOL)
    assert_allclose(m["macro_f1"], f1_score(y, pred, average="macro", zero_division=0), **TOL)
    assert m["confusion_matrix"] == confusion_matrix(y, pred, labels=labels).tolist()
    normalized = confusion_matrix(y, pred, labels=labels, normalize="true")
    assert_allclose(m["confusion_matrix_normalized"], np.nan_to_num(normalized), **TOL)

    prec, rec, f1, sup = precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    mcm = multilabel_confusion_matrix(y, pred, labels=labels)  # [[tn, fp], [fn, tp]] per class
    tn, fp = mcm[:, 0, 0], mcm[:, 0, 1]
    for i, name in enumerate(classes):
        c = m["per_class"][name]
        assert_allclose([c["precision"], c["recall"], c["sensitivity"], c["f1"]],
                        [prec[i], rec[i], rec[i], f1[i]], **TOL)
        assert c["support"] == sup[i]
        assert_allclose(c["specificity"], tn[i] / (tn[i] + fp[i]), **TOL)
        if sup[i] == 0:
            assert c["roc_auc"] is None
        else:
            assert_allclose(c["roc_auc"], roc_auc_score(y == i, p[:, i]), **TOL)

    if len(np.unique(y)) == len(classes):
        # one-vs-rest macro AUC: sklearn's multilabel path (rows need not sum to 1)
        onehot = np.eye(len(classes))[y]
        assert_allclose(m["macro_auc"], roc_auc_score(onehot, p, average="macro"), **TOL)
        if not case.get("ties"):
            expected = (roc_auc_score(y, p[:, 1]) if len(classes) == 2
                        else roc_auc_score(y, p, multi_class="ovr", average="macro"))
            assert_allclose(m["macro_auc"], expected, **TOL)
    json.dumps(m, allow_nan=False)  # JSON-serialisable, no NaN


def test_hand_computed_three_classes():
    # true: a a a b b c ; predicted: a a b b c c
    y = np.array([0, 0, 0, 1, 1, 2])
    p = np.eye(3)[[0, 0, 1, 1, 2, 2]] * 0.8 + 0.2 / 3
    m = classification_metrics(y, p, ["a", "b", "c"])
    assert m["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert_allclose(m["accuracy"], 4 / 6)
    assert_allclose(m["balanced_accuracy"], (2 / 3 + 1 / 2 + 1) / 3)
    a, b, c = (m["per_class"][k] for k in "abc")
    assert_allclose([a["precision"], a["recall"], a["specificity"]], [1, 2 / 3, 1])
    assert_allclose([b["precision"], b["recall"], b["specificity"]], [1 / 2, 1 / 2, 3 / 4])
    assert_allclose([c["precision"], c["recall"], c["specificity"]], [1 / 2, 1, 4 / 5])
    assert_allclose(b["f1"], 0.5)
    assert_allclose(c["f1"], 2 * 0.5 * 1 / 1.5)
    assert_allclose(m["confusion_matrix_normalized"][0], [2 / 3, 1 / 3, 0])


@pytest.mark.parametrize("classes, positive", [
    (["no", "yes"], "yes"),
    (["notumor", "tumor"], "tumor"),
    (["No_Tumor", "glioma"], "glioma"),
    (["Parasitized", "Uninfected"], "Parasitized"),
    (["healthy", "pneumonia"], "pneumonia"),
    (["cat", "dog"], "dog"),
    (["benign", "malignant"], "malignant"),
])
def test_default_positive_class(classes, positive):
    assert classes[default_positive(classes)] == positive


def test_binary_sensitivity_specificity_hand_computed():
    # classes [Parasitized, Uninfected]: positive = Parasitized (index 0)
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
    pred = np.array([0, 0, 0, 1, 1, 1, 1, 1, 0, 0])
    p = np.eye(2)[pred] * 0.9 + 0.05
    m = classification_metrics(y, p, ["Parasitized", "Uninfected"])
    b = m["binary"]
    assert (b["positive"], b["negative"]) == ("Parasitized", "Uninfected")
    assert_allclose([b["sensitivity"], b["specificity"], b["ppv"], b["npv"]],
                    [3 / 4, 4 / 6, 3 / 5, 4 / 5])
    forced = classification_metrics(y, p, ["Parasitized", "Uninfected"], positive="Uninfected")
    assert_allclose(forced["binary"]["sensitivity"], 4 / 6)


@pytest.mark.parametrize("y, p, match", [
    ([0, 1], np.ones(3) / 3, "2-D"),
    ([0, 1, 2], np.ones((2, 3)) / 3, "one label per row"),
    ([0, 3], np.ones((2, 3)) / 3, "labels must lie"),
    ([], np.ones((0, 3)), "no samples"),
    ([0, 1], np.array([[0.5, 0.5, 0.0], [np.nan, 0.5, 0.5]]), "NaN"),
])
def test_bad_inputs_are_named(y, p, match):
    with pytest.raises(ValueError, match=match):
        classification_metrics(np.asarray(y, dtype=int), p, ["a", "b", "c"])


def test_column_count_must_match_classes():
    with pytest.raises(ValueError, match="3 columns but there are 2 classes"):
        classification_metrics([0, 1], np.ones((2, 3)) / 3, ["a", "b"])
