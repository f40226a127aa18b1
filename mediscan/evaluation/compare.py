"""`mediscan compare DATA --models a,b,c`: train each on one identical split and seed, then tabulate."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Sequence

import numpy as np

from mediscan.evaluation.robustness import robustness_table
from mediscan.evaluation.stats import pairwise_mcnemar
from mediscan.files import write_json
from mediscan.forward import images_per_second, pick_device
from mediscan.predict import Classifier
from mediscan.progress import console
from mediscan.report import plots
from mediscan.run_folder import RunFolder

HEADLINES = ("accuracy", "balanced_accuracy", "macro_f1", "macro_auc")


def _run_name(model: str) -> str:
    return model.replace("/", "_")


def _train_one(data: Path, model: str, run: RunFolder, split_file: Path, *, recipe: str,
               progress: bool, device, overrides: dict) -> None:
    """Train (or resume, or skip when finished) one model of the comparison."""
    from mediscan.training.trainer import train

    if run.metrics_file.exists():
        console.print(f"{model}: already trained, reusing {run.path}")
        return
    resume = run.checkpoint_file.exists() and run.recipe_file.exists()
    train(data, recipe=recipe, out=run.path, model=model, resume=resume, progress=progress,
          device=device, split_from=split_file if split_file.exists() else None, **overrides)
    if not split_file.exists():
        shutil.copy(run.split_file, split_file)


def _predictions(run: RunFolder) -> tuple[np.ndarray, np.ndarray]:
    """(true labels, predicted labels) from a run's predictions.csv."""
    rows = run.read_predictions()
    return np.array([r["true"] for r in rows]), np.array([r["predicted"] for r in rows])


def _row(model: str, run: RunFolder, *, device, robustness: bool, severities: Sequence[int]) -> dict:
    """One line of the comparison table, measured from the finished run."""
    from mediscan.data.prepare import load_run_data

    metrics = run.read_metrics()
    classifier = Classifier.load(run.path, device=device)
    meta = classifier.meta
    row = {"name": model, "run": run.path.name, **{k: metrics["test"]["headline"][k] for k in HEADLINES},
           "ece": metrics.get("calibration", {}).get("ece_after"), "params": meta["params"],
           "train_seconds": meta["train_seconds"]}
    prepared = load_run_data(run.path, meta, progress=False)
    index = np.sort(prepared.indices["test"])
    images, labels = np.asarray(prepared.decoded.images[index]), prepared.folder.labels[index]
    row["images_per_second"] = images_per_second(classifier.logits_batch, images, device=device)
    if robustness:
        table = robustness_table(classifier, images, labels, severities=severities, progress=False)
        row["robustness_score"] = table["score"]
    return row


def compare_models(data: Path, models: Sequence[str], *, out: Path, recipe: str = "default",
                   device=None, robustness: bool = True, severities: Sequence[int] = (1, 3, 5),
                   progress: bool = True, **overrides) -> dict:
    """Train every model on the same split and seed; write comparison.json, a chart and a report."""
    from mediscan.report.html import render_comparison_report

    out, device = Path(out), pick_device(device)
    out.mkdir(parents=True, exist_ok=True)
    split_file = out / "split.json"
    rows, predicted, truth = [], {}, None
    for model in models:
        run = RunFolder(out / _run_name(model))
        _train_one(Path(data), model, run, split_file, recipe=recipe, progress=progress,
                   device=device, overrides=overrides)
        rows.append(_row(model, run, device=device, robustness=robustness, severities=severities))
        truth, predicted[model] = _predictions(run)
        result = {"data": str(data), "recipe": recipe, "seed": overrides.get("seed"),
                  "split": run.read_metrics().get("split"),
                  "rows": rows, "mcnemar": pairwise_mcnemar(truth, predicted)}
        write_json(out / "comparison.json", result, default=float)
    plots.plot_comparison(rows, out / "plots" / "comparison.png")
    render_comparison_report(out)
    return result
