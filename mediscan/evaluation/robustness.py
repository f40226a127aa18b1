"""`mediscan robustness RUN [DATA]`: accuracy under each corruption (`corruptions`) at each severity, seeded.

`robustness.json` (written by the robustness command, read by the report)::

    {"clean_accuracy": 0.97, "score": 0.88, "seed": 0, "severities": [1, 2, 3, 4, 5],
     "corruptions": {"blur": {"accuracy": [0.96, 0.95, 0.9, 0.85, 0.7],
                              "parameter": "sigma px", "values": [0.5, 1, 1.5, 2, 3]}, ...}}

as built by `robustness_results(clean_accuracy, accuracy_by_corruption, seed=...)`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from mediscan.evaluation.corruptions import CORRUPTIONS, SEVERITIES, corrupt, get_corruption
from mediscan.files import write_json
from mediscan.predict import Classifier
from mediscan.progress import progress_bar
from mediscan.report import plots
from mediscan.run_folder import RunFolder


def accuracy_under(classifier: Classifier, images: np.ndarray, labels: np.ndarray, *,
                   corruption: str | None = None, severity: int = 0, seed: int = 0) -> float:
    """Accuracy on `images` after one corruption at one severity (None: clean)."""
    batch = corrupt(images, corruption, severity, seed=seed) if corruption else images
    return float((classifier.logits_batch(batch).argmax(1) == labels).mean())


def _accuracy_list(values) -> list[float]:
    if isinstance(values, Mapping):
        return [float(values[k]) for k in sorted(values, key=int) if int(k) != 0]
    return [float(v) for v in values]


def robustness_score(clean_acc: float, acc_by_corruption: Mapping[str, Sequence[float]]) -> float:
    """Mean accuracy over all corruptions and severities divided by clean accuracy
    (the relative robustness of Hendrycks & Dietterich, ImageNet-C)."""
    if clean_acc <= 0:
        raise ValueError("clean accuracy must be positive")
    accs = [a for v in acc_by_corruption.values() for a in _accuracy_list(v)]
    if not accs:
        raise ValueError("no corruption accuracies given")
    return float(np.mean(accs) / clean_acc)


def robustness_results(
    clean_accuracy: float, acc_by_corruption: Mapping[str, Sequence[float]], *, seed: int = 0
) -> dict:
    """The JSON document of a robustness run (see the module docstring)."""
    corruptions = {}
    for name, values in acc_by_corruption.items():
        c = get_corruption(name)
        corruptions[name] = {"accuracy": _accuracy_list(values), "parameter": c.parameter,
                             "values": list(c.values), "description": c.description}
    return {
        "clean_accuracy": float(clean_accuracy),
        "score": robustness_score(clean_accuracy, acc_by_corruption),
        "seed": int(seed),
        "severities": list(SEVERITIES),
        "corruptions": corruptions,
    }


def robustness_table(classifier: Classifier, images: np.ndarray, labels: np.ndarray, *,
                     corruptions: Sequence[str] | None = None,
                     severities: Sequence[int] = SEVERITIES, seed: int = 0,
                     progress: bool = True) -> dict:
    """robustness.json content: clean accuracy, accuracy per corruption and severity, score."""
    names = list(corruptions or CORRUPTIONS)
    clean = accuracy_under(classifier, images, labels)
    table: dict[str, dict[int, float]] = {}
    with progress_bar("corruptions", len(names) * len(severities), progress) as advance:
        for name in names:
            table[name] = {}
            for severity in severities:
                table[name][severity] = accuracy_under(classifier, images, labels, corruption=name,
                                                       severity=severity, seed=seed)
                advance(1, name)
    result = robustness_results(clean, {k: [v[s] for s in severities] for k, v in table.items()},
                                seed=seed)
    result["severities"] = list(severities)
    result["n_images"] = int(len(labels))
    return result


def test_images(run_dir: Path, meta: dict, data: Path | None, *, workers=None,
                progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The run's test split, or every readable image of DATA (same classes as the model)."""
    from mediscan.data.prepare import load_run_data
    from mediscan.evaluation.runner import load_external

    if data is None:
        prepared = load_run_data(run_dir, meta, workers=workers, progress=progress)
        index = np.sort(prepared.indices["test"])
        return np.asarray(prepared.decoded.images[index]), prepared.folder.labels[index]
    external = load_external(Path(data), meta, None, workers=workers, progress=progress)
    return np.asarray(external.images), external.y_true


def run_robustness(run_dir: Path, data: Path | None = None, *,
                   corruptions: Sequence[str] | None = None,
                   severities: Sequence[int] = SEVERITIES, seed: int = 0, device=None,
                   progress: bool = True, workers: int | None = None, backend: str = "torch") -> dict:
    """Run the suite with the run's classifier (`backend` torch or onnx), write robustness.json and
    plots/robustness.png, refresh the report."""
    from mediscan.evaluation.runner import refresh_report

    run_dir = Path(run_dir)
    classifier = Classifier.load(run_dir, device=device, backend=backend)
    images, labels = test_images(run_dir, classifier.meta, data, workers=workers, progress=progress)
    result = robustness_table(classifier, images, labels, corruptions=corruptions,
                              severities=severities, seed=seed, progress=progress)
    result["data"] = str(data) if data else "test split"
    run = RunFolder(run_dir)
    write_json(run.robustness_file, result)
    plots.plot_robustness(result, run.plots / "robustness.png")
    refresh_report(run_dir)
    return result
