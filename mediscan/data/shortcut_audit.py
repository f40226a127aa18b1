"""Shortcut audit: can label-irrelevant image properties alone tell the classes apart?

For each property group of `mediscan.data.shortcuts` a small gradient-boosting classifier
(scikit-learn's HistGradientBoostingClassifier: fast, NaN-aware, no scaling needed) gives
out-of-fold probabilities from `StratifiedGroupKFold` (duplicate groups never straddle
folds, so a copy cannot recognise its original). From those come, per class (one-vs-rest) and
overall (macro), the AUC with a percentile bootstrap interval
(`evaluation.stats.bootstrap_distributions`).

A group is flagged for a class when the lower end of that interval is >= `FLAG_LOWER_CI`
(0.75). Chance is 0.5; on the usual clinical scale 0.7-0.8 is "acceptable" and 0.8-0.9
"excellent" discrimination, so a property that alone reaches 0.75 with 95% confidence is a
cue a network learns at once. Using the lower end keeps small classes from false flags: on
generated data without a planted cue (3 seeds, 108 images) the highest lower end was 0.57
(tests/test_shortcuts.py), while a planted cue reaches >= 0.95. "all" (every property
together) is flagged only for classes no single group explains. A flag is a reason to look
at the example images, not proof: intensity inside the head also moves with a large lesion.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from mediscan.data.folders import ImageFolder
from mediscan.data.shortcuts import GROUPS, feature_matrices, folder_properties
from mediscan.evaluation.stats import bootstrap_distributions, percentile_interval

FLAG_LOWER_CI = 0.75
N_SPLITS = 5
N_RESAMPLES = 200
EXAMPLES = 8
TITLES = {"size": "image size and aspect", "format": "file format and PIL mode",
          "colour": "colour vs grey", "border": "the border colour",
          "text": "burned-in text in the margins",
          "framing": "framing (head fraction, position, skull ring)",
          "intensity": "the intensity distribution inside the head",
          "all": "all these properties together"}


def out_of_fold_probabilities(x: np.ndarray, y: np.ndarray, groups: np.ndarray, n_classes: int,
                              *, seed: int = 0) -> np.ndarray | None:
    """N x K probabilities, each from a model that never saw the sample's duplicate group;
    None when the properties are the same for every sample (nothing to learn)."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.model_selection import StratifiedGroupKFold

    finite = np.where(np.isfinite(x), x, 0.0)
    if x.shape[1] == 0 or np.all(finite == finite[:1]) and np.all(np.isnan(x) == np.isnan(x[:1])):
        return None
    splits = min(N_SPLITS, int(np.bincount(y, minlength=n_classes).min()))
    probs = np.zeros((len(y), n_classes))
    folds = StratifiedGroupKFold(splits, shuffle=True, random_state=seed).split(x, y, groups)
    with threadpool_limits(1):  # OpenMP threads on small fits are 10-40x slower on a busy machine
        for train, held in folds:
            model = HistGradientBoostingClassifier(max_iter=60, max_leaf_nodes=15, min_samples_leaf=10,
                                                   early_stopping=False, random_state=seed)
            model.fit(x[train], y[train])
            probs[np.ix_(held, model.classes_)] = model.predict_proba(x[held])
    return probs


def _auc_entries(y: np.ndarray, probs: np.ndarray | None, classes: list[str], seed: int) -> dict:
    """{"per_class": {name: {"auc", "ci"}}, "overall": {...}}; constant properties give 0.5."""
    if probs is None:
        chance = {"auc": 0.5, "ci": [0.5, 0.5]}
        return {"per_class": {c: dict(chance) for c in classes}, "overall": dict(chance),
                "constant": True}
    from sklearn.metrics import roc_auc_score

    dist = bootstrap_distributions(y, probs, n_resamples=N_RESAMPLES, seed=seed)
    per_class = {c: {"auc": round(float(roc_auc_score(y == k, probs[:, k])), 4),
                     "ci": _rounded(percentile_interval(dist["roc_auc"][:, k]))}
                 for k, c in enumerate(classes)}
    overall = float(np.mean([e["auc"] for e in per_class.values()]))
    return {"per_class": per_class, "overall": {"auc": round(overall, 4),
            "ci": _rounded(percentile_interval(dist["macro_auc"]))}, "constant": False}


def _rounded(interval: list[float] | None) -> list[float] | None:
    return None if interval is None else [round(v, 4) for v in interval]


def audit(matrices: dict[str, np.ndarray], y: np.ndarray, groups: np.ndarray, classes: list[str],
          keys: list[str], *, seed: int = 0) -> dict:
    """AUCs of every property group per class and overall, the flags and their example keys."""
    counts = np.bincount(y, minlength=len(classes))
    if len(classes) < 2 or counts.min() < 2:
        return {"skipped": "needs two or more classes with at least two readable images each",
                "groups": {}, "flags": [], "threshold": FLAG_LOWER_CI}
    result, flags = {}, []
    for group in GROUPS:
        probs = out_of_fold_probabilities(matrices[group], y, groups, len(classes), seed=seed)
        result[group] = {"title": TITLES[group], **_auc_entries(y, probs, classes, seed)}
        for k, name in enumerate(classes):
            entry = result[group]["per_class"][name]
            explained = any(f["class"] == name for f in flags)
            if entry["ci"] and entry["ci"][0] >= FLAG_LOWER_CI and not (group == "all" and explained):
                flags.append(_flag(group, name, entry, probs[:, k], y == k, keys))
    flags.sort(key=lambda f: (-f["auc"], f["class"]))
    return {"groups": result, "flags": flags, "threshold": FLAG_LOWER_CI, "n": int(len(y)),
            "method": f"HistGradientBoostingClassifier, StratifiedGroupKFold({N_SPLITS}) over "
                      f"duplicate groups, {N_RESAMPLES} stratified bootstrap resamples"}


def _flag(group: str, name: str, entry: dict, score: np.ndarray, member: np.ndarray,
          keys: list[str]) -> dict:
    """The sentence and the most shortcut-typical images: members the property model is surest of,
    and the other classes' images it finds least like the class."""
    lo, hi = entry["ci"]
    members, others = np.flatnonzero(member), np.flatnonzero(~member)
    typical = members[np.argsort(-score[members], kind="stable")][:EXAMPLES]
    unlike = others[np.argsort(score[others], kind="stable")][:EXAMPLES]
    return {"group": group, "class": name, "auc": entry["auc"], "ci": entry["ci"],
            "sentence": f"{name} can be told apart by {TITLES[group]} alone: "
                        f"AUC {entry['auc']:.2f} ({lo:.2f}-{hi:.2f})",
            "typical": [{"key": keys[i], "score": round(float(score[i]), 3)} for i in typical],
            "least_like": [{"key": keys[i], "score": round(float(score[i]), 3)} for i in unlike]}


def audit_folder(folder: ImageFolder, groups: np.ndarray, *, workers: int | None = None,
                 progress: bool = True, cache_dir: Path | None = None, seed: int = 0) -> dict:
    """The shortcut audit of a folder's readable images; `groups`: a duplicate group per sample."""
    properties = folder_properties(folder, workers=workers, progress=progress, cache_dir=cache_dir)
    ok = np.array([i for i, p in enumerate(properties) if "values" in p], dtype=np.int64)
    matrices = feature_matrices([properties[i] for i in ok])
    report = audit(matrices, folder.labels[ok], np.asarray(groups)[ok], list(folder.classes),
                   [folder.samples[i].key for i in ok], seed=seed)
    return {**report, "unreadable": int(len(folder) - len(ok))}
