"""`mediscan robustness RUN [DATA]`: accuracy under each corruption at each severity, seeded."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from mediscan.evaluation.robustness import CORRUPTIONS, SEVERITIES, corrupt, robustness_results
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
