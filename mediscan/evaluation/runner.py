"""Evaluate a run: on its own test split (metrics.json) or on another data set (evaluations/NAME.json)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mediscan.data.cache import load_images
from mediscan.data.folders import scan_folder
from mediscan.data.prepare import load_run_data
from mediscan.evaluation.adapt import adapt_batchnorm
from mediscan.evaluation.calibration import abstain_summary, calibration_summary, selective_prediction
from mediscan.evaluation.mapping import map_probabilities, parse_mapping, resolve_target_order
from mediscan.evaluation.metrics import quadratic_kappa
from mediscan.evaluation.stats import bootstrap_ci, metrics_with_ci
from mediscan.ood import METHOD, OodDetector, load_detector
from mediscan.predict import DEFAULT_ABSTAIN_BELOW, Classifier
from mediscan.progress import console
from mediscan.report import plots
from mediscan.run_folder import RunFolder
from mediscan.transforms import Preprocess

WORST_ERRORS = 16


@dataclass
class Scored:
    """Everything needed to write an evaluation: truth, probabilities, and what they refer to."""

    y_true: np.ndarray
    probs: np.ndarray
    classes: list[str]
    sources: list[str]
    images: np.ndarray  # uint8 N x C x S x S (the preprocessed view the model saw)
    abstain_below: float | None = None  # None: no abstain block; flags use DEFAULT_ABSTAIN_BELOW
    ordinal: bool = False  # ordered grades: quadratic-weighted kappa joins the headline
    ood_scores: np.ndarray | None = None  # None: the bundle has no OOD statistics
    outside: np.ndarray | None = None  # per sample: OOD score above the bundle's threshold
    detector: OodDetector | None = None  # what scored them

    @property
    def uncertain(self) -> np.ndarray:
        """Per sample: top probability below the abstain threshold (`Prediction.uncertain`)."""
        threshold = DEFAULT_ABSTAIN_BELOW if self.abstain_below is None else self.abstain_below
        return self.probs.max(axis=1) < threshold


def _chw_to_hwc(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image).transpose(1, 2, 0)
    return image[..., 0] if image.shape[-1] == 1 else image


def worst_errors(scored: Scored, limit: int = WORST_ERRORS) -> list[int]:
    """Misclassified samples, most confidently wrong first."""
    predicted = scored.probs.argmax(1)
    wrong = np.flatnonzero(predicted != scored.y_true)
    confidence = scored.probs[wrong, predicted[wrong]]
    return wrong[np.argsort(-confidence)][:limit].tolist()


def write_predictions(run: RunFolder, scored: Scored, evaluation: str | None = None) -> None:
    """predictions.csv (or an evaluation's): one row per image, its truth, prediction and probabilities."""
    header = ["file", "true", "predicted", "probability", "uncertain", "ood_score", "outside", *scored.classes]
    rows = []
    uncertain = scored.uncertain
    for i, (source, truth, row) in enumerate(zip(scored.sources, scored.y_true, scored.probs)):
        top = int(row.argmax())
        rows.append([source, scored.classes[truth], scored.classes[top], f"{row[top]:.6f}",
                     int(uncertain[i]), *_ood_cells(scored, i), *(f"{p:.6f}" for p in row)])
    run.write_predictions(header, rows, evaluation)


def _ood_cells(scored: Scored, i: int) -> list[str]:
    """The ood_score and outside cells of row i; empty without OOD statistics."""
    if scored.ood_scores is None:
        return ["", ""]
    return [f"{scored.ood_scores[i]:.4f}", str(int(scored.outside[i]))]


def write_plots(plot_dir: Path, scored: Scored, prefix: str = "") -> list[dict]:
    """Confusion matrices, ROC, worst-error gallery; returns the listed errors."""
    plot_dir.mkdir(parents=True, exist_ok=True)
    metrics_cm = _confusion(scored)
    plots.plot_confusion(metrics_cm, scored.classes, plot_dir / f"{prefix}confusion.png",
                         normalized=False)
    plots.plot_confusion(metrics_cm, scored.classes, plot_dir / f"{prefix}confusion_normalized.png",
                         normalized=True)
    plots.plot_roc(scored.y_true, scored.probs, scored.classes, plot_dir / f"{prefix}roc.png")
    errors, uncertain = worst_errors(scored), scored.uncertain
    if errors:
        titles = [f"true {scored.classes[scored.y_true[i]]}\npred "
                  f"{scored.classes[scored.probs[i].argmax()]} {scored.probs[i].max():.0%}"
                  f"{' uncertain' if uncertain[i] else ''}" for i in errors]
        plots.plot_gallery([_chw_to_hwc(scored.images[i]) for i in errors], titles,
                           plot_dir / f"{prefix}worst_errors.png", ncols=4)
    return [{"file": scored.sources[i], "true": scored.classes[scored.y_true[i]],
             "predicted": scored.classes[int(scored.probs[i].argmax())],
             "probability": float(scored.probs[i].max()), "uncertain": bool(uncertain[i]),
             "outside": None if scored.outside is None else bool(scored.outside[i])}
            for i in errors]


def _confusion(scored: Scored) -> np.ndarray:
    from sklearn.metrics import confusion_matrix

    return confusion_matrix(scored.y_true, scored.probs.argmax(1),
                            labels=list(range(len(scored.classes))))


def score_metrics(scored: Scored, *, n_resamples: int, seed: int = 0) -> dict:
    """Metrics with bootstrap intervals, the selective-prediction curve and the abstain block."""
    result = metrics_with_ci(scored.y_true, scored.probs, scored.classes,
                             n_resamples=n_resamples, seed=seed)
    if scored.ordinal:
        kappa = quadratic_kappa(scored.y_true, scored.probs)
        result["quadratic_kappa"] = kappa
        ci = bootstrap_ci(scored.y_true, scored.probs, quadratic_kappa, n_resamples=n_resamples, seed=seed)
        result["headline"]["quadratic_kappa"] = {"value": kappa, "ci": None if ci is None else list(ci)}
    result["selective"] = selective_prediction(scored.probs, scored.y_true)
    if scored.abstain_below is not None:
        result["abstain"] = abstain_summary(scored.probs, scored.y_true, scored.abstain_below,
                                            n_resamples=n_resamples, seed=seed)
    if scored.ood_scores is not None:
        result["ood"] = ood_summary(scored)
    return result


def ood_summary(scored: Scored) -> dict:
    """The "ood" block: images above the OOD threshold, and the accuracy on the others."""
    n, n_outside = len(scored.outside), int(scored.outside.sum())
    inside = ~scored.outside
    accuracy = float((scored.probs[inside].argmax(1) == scored.y_true[inside]).mean()) if inside.any() else None
    return {"method": METHOD, "threshold": scored.detector.threshold,
            "quantile": scored.detector.quantile, "n": n, "n_outside": n_outside,
            "fraction_outside": n_outside / n if n else None, "accuracy_inside": accuracy}


def run_classifier(run_dir: Path, model=None, device=None, backend: str = "torch") -> Classifier:
    """The run's classifier (`backend` torch or onnx); `model`: its network already in memory (training
    just fitted it)."""
    if model is None:
        return Classifier.load(run_dir, device=device, backend=backend)
    meta = RunFolder(run_dir).read_meta()
    return Classifier(model, meta, device=device, ood=load_detector(run_dir, meta))


def _split_outputs(classifier: Classifier, prepared, name: str):
    index = np.sort(prepared.indices[name])
    outputs = classifier.outputs_batch(prepared.decoded.images[index])
    return outputs, prepared.folder.labels[index], index


def _with_ood(scored: Scored, classifier: Classifier, outputs) -> Scored:
    """Scored with the OOD scores and verdicts of the same forward pass (if the bundle has statistics)."""
    scores = classifier.ood_scores(outputs)
    if scores is not None:
        scored.ood_scores, scored.outside = scores, classifier.ood.outside(scores)
        scored.detector = classifier.ood
    return scored


def evaluate_run(run_dir: Path, *, prepared=None, model=None, device=None, progress: bool = True,
                 n_resamples: int = 1000, workers: int | None = None,
                 abstain_below: float | None = None, val_logits: np.ndarray | None = None,
                 backend: str = "torch") -> dict:
    """Score the run's own test split (`backend` torch or onnx: its model.onnx); writes metrics.json,
    predictions.csv, plots and the report.

    `val_logits`: the validation split's logits if the caller has them (training just scored it)."""
    run_dir, run = Path(run_dir), RunFolder(run_dir)
    classifier = run_classifier(run_dir, model, device, backend)
    meta = classifier.meta
    prepared = prepared or load_run_data(run_dir, meta, workers=workers, progress=progress)
    test_outputs, y_test, test_index = _split_outputs(classifier, prepared, "test")
    if len(y_test) == 0:
        console.print("[yellow]no test split: nothing to evaluate")
        return {}
    test_logits = test_outputs.logits
    scored = _with_ood(Scored(y_test, classifier.probabilities(test_logits), meta["classes"],
                              [prepared.folder.samples[i].key for i in test_index],
                              prepared.decoded.images[test_index], abstain_below,
                              ordinal=bool(meta.get("recipe", {}).get("ordinal"))),
                       classifier, test_outputs)
    result = {"test": score_metrics(scored, n_resamples=n_resamples)}
    if val_logits is None:
        val_outputs, y_val, _ = _split_outputs(classifier, prepared, "val")
        val_logits = val_outputs.logits
    else:
        y_val = prepared.folder.labels[np.sort(prepared.indices["val"])]
    if len(y_val):
        result["calibration"] = calibration_summary(val_logits, y_val, test_logits, y_test,
                                                    bias=classifier.class_bias)
        plots.plot_reliability(result["calibration"]["reliability_before"],
                               run.plots / "reliability.png",
                               after=result["calibration"]["reliability_after"])
    result["test"]["worst_errors"] = write_plots(run.plots, scored)
    result["split"] = {name: int(len(idx)) for name, idx in prepared.indices.items()}
    result["backend"] = classifier.backend
    run.write_metrics(result)
    write_predictions(run, scored)
    refresh_report(run_dir)
    return result


@dataclass
class External:
    """Another data set, decoded with a run's preprocessing, its truth in the target classes."""

    images: np.ndarray
    y_true: np.ndarray
    keys: list[str]
    classes: list[str]
    mapping: dict | None
    skipped: list


def _external_labels(folder, meta: dict, mapping_specs: list[str] | None):
    """(target classes, truth per sample, the mapping model class -> target class or None)."""
    if not mapping_specs:
        missing = sorted(set(folder.classes) - set(meta["classes"]))
        if missing:
            raise ValueError(
                f"{folder.root}: classes {missing} are not classes of the model "
                f"({', '.join(meta['classes'])}); map them, e.g. --map "
                "'glioma,meningioma,pituitary=yes' --map 'notumor=no'")
        index = {c: i for i, c in enumerate(meta["classes"])}
        return meta["classes"], np.array([index[folder.classes[y]] for y in folder.labels]), None
    mapping = parse_mapping(mapping_specs, meta["classes"])
    targets = resolve_target_order(mapping, folder.classes)
    return list(folder.classes), folder.labels, {src: targets[t] for src, t in mapping.items()}


def load_external(data: Path, meta: dict, mapping_specs: list[str] | None, *,
                  workers: int | None = None, progress: bool = True) -> External:
    """Scan and decode DATA with the bundle's preprocessing; unreadable files are listed."""
    folder = scan_folder(data)
    decoded = load_images(folder, Preprocess.from_dict(meta["preprocess"]), workers=workers,
                          progress=progress)
    classes, y_all, mapping = _external_labels(folder, meta, mapping_specs)
    ok = np.flatnonzero(decoded.ok)
    return External(np.asarray(decoded.images[ok]), y_all[ok], [folder.samples[i].key for i in ok],
                    classes, mapping, folder.skipped + decoded.failures)


def _slug(path: Path) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", path.resolve().name) or "external"


def evaluate_external(run_dir: Path, data: Path, *, mapping_specs: list[str] | None = None,
                      name: str | None = None, device=None, progress: bool = True,
                      n_resamples: int = 1000, workers: int | None = None,
                      abstain_below: float | None = None, adapt: bool = False, backend: str = "torch") -> dict:
    """Score a run on another data set (classes mapped if needed) through its `backend` (torch or
    onnx); writes evaluations/NAME.json.

    `adapt`: re-estimate batch-norm statistics on that data set first (`evaluation.adapt`)."""
    if adapt and backend != "torch":
        raise ValueError("--adapt re-estimates the PyTorch network's batch-norm statistics; "
                         "evaluate with --backend torch")
    run_dir, run = Path(run_dir), RunFolder(run_dir)
    classifier = Classifier.load(run_dir, device=device, backend=backend)
    meta = classifier.meta
    ext = load_external(Path(data), meta, mapping_specs, workers=workers, progress=progress)
    adapted = adapt_batchnorm(classifier.model, ext.images, mean=meta["mean"], std=meta["std"],
                              device=classifier.device) if adapt else 0
    outputs = classifier.outputs_batch(ext.images)
    probs = classifier.probabilities(outputs.logits)
    if ext.mapping:
        probs = map_probabilities(probs, meta["classes"], ext.mapping, ext.classes)
    scored = _with_ood(Scored(ext.y_true, probs, ext.classes, ext.keys, ext.images, abstain_below,
                              ordinal=not ext.mapping and bool(meta.get("recipe", {}).get("ordinal"))),
                       classifier, outputs)
    name = name or _slug(Path(data))
    result = {"name": name, "data": str(data), "mapping": ext.mapping or {},
              "adapted_batchnorm_layers": adapted,
              "metrics": score_metrics(scored, n_resamples=n_resamples),
              "skipped": [{"path": str(s.path), "reason": s.reason} for s in ext.skipped]}
    result.update(_seen_and_unseen(run_dir, meta, Path(data), scored, run.evaluation_file(name, "_seen.csv"),
                                   n_resamples=n_resamples, workers=workers, progress=progress))
    result["metrics"]["worst_errors"] = write_plots(run.evaluations / name, scored)
    run.write_evaluation(name, result)
    write_predictions(run, scored, evaluation=name)
    refresh_report(run_dir)
    return result


def _seen_and_unseen(run_dir: Path, meta: dict, data: Path, scored: Scored, csv_path: Path, *,
                     n_resamples: int, workers: int | None, progress: bool) -> dict:
    """{"seen": which files the model trained or validated on, "unseen_metrics": the rest's metrics}."""
    from mediscan.data.inspect import write_leak_csv
    from mediscan.evaluation.seen import check_seen

    check = check_seen(run_dir, meta, scan_folder(data), workers=workers, progress=progress)
    if not check.checked:
        console.print(f"[yellow]not checked for images the model was trained on: {check.reason}; "
                      "evaluated anyway")
        return {"seen": check.summary(scored.sources), "unseen_metrics": None}
    unseen = ~check.seen_mask(scored.sources)
    part = Scored(scored.y_true[unseen], scored.probs[unseen], scored.classes,
                  [s for s, keep in zip(scored.sources, unseen) if keep], scored.images[unseen],
                  scored.abstain_below)
    return {"seen": check.summary(scored.sources, write_leak_csv(csv_path, check.rows)),
            "unseen_metrics": score_metrics(part, n_resamples=n_resamples) if unseen.any() else None}


def refresh_report(run_dir: Path) -> None:
    from mediscan.report.html import render_run_report

    run = RunFolder(run_dir)
    if run.history_file.exists():
        plots.plot_history(run.read_history(), run.plots / "history.png")
    render_run_report(run_dir)
