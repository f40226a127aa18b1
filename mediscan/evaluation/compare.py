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
from mediscan.models import model_config
from mediscan.predict import Classifier
from mediscan.progress import console
from mediscan.report import plots
from mediscan.run_folder import RunFolder
from mediscan.training.recipes import Recipe

HEADLINES = ("accuracy", "balanced_accuracy", "macro_f1", "macro_auc")


def _run_name(model: str) -> str:
    return model.replace("/", "_")


def plan_line(models: Sequence[str], recipe: Recipe, device) -> str:
    """What the comparison will cost, printed before it starts."""
    head = f"comparing {len(models)} models with recipe {recipe.name} on {device.type.upper()}: "
    if recipe.time_budget:
        minutes = recipe.time_budget / 60
        total = len(models) * minutes
        return (head + f"each train command within a {minutes:.0f}-minute budget, about {total:.0f} minutes "
                "in all, then the robustness check of each model")
    hours = " (hours on a CPU; --time-budget 10m bounds each model)" if device.type != "cuda" else ""
    return head + f"each trains {recipe.epochs} epochs with no time budget{hours}"


def model_overrides(model: str, recipe: Recipe) -> tuple[dict, str | None]:
    """Where one model must differ from the shared recipe, and a note saying so: a model without
    pretrained weights trains from scratch in a pretrained recipe, a model built for one input size
    (the tutorial CNNs) trains at that size."""
    config = model_config(model)
    settings, notes = {}, []
    if recipe.pretrained and not config.pretrained_source:
        settings["pretrained"] = False
        notes.append("no pretrained weights: trained from scratch")
    if config.fixed_input_size:
        settings["input_size"] = config.input_size
        if recipe.input_size != config.input_size:
            notes.append(f"built for {config.input_size}-px inputs: trained at that size")
    return settings, "; ".join(notes) or None


def _train_one(data: Path, model: str, run: RunFolder, split_file: Path, *, recipe: Recipe,
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


def compare_models(data: Path, models: Sequence[str], *, out: Path, recipe: str | None = None,
                   device=None, robustness: bool = True, severities: Sequence[int] = (1, 3, 5),
                   progress: bool = True, **overrides) -> dict:
    """Train every model on the same split and seed; write comparison.json, a chart and a report.

    No recipe: the one `train` uses on this device. A model that cannot be trained (unknown name,
    weights that cannot be loaded) is reported in `failed` and the others go on."""
    from mediscan.report.html import render_comparison_report
    from mediscan.training.trainer import default_recipe_for, resolve_recipe

    out, device = Path(out), pick_device(device)
    shared = resolve_recipe(recipe or default_recipe_for(device), **overrides)
    if progress:
        console.print(plan_line(models, shared, device))
    out.mkdir(parents=True, exist_ok=True)
    result = {"data": str(data), "recipe": shared.name, "seed": shared.seed, "split": None, "rows": [],
              "mcnemar": [], "failed": []}
    predicted, truth = {}, None
    for model in models:
        run = RunFolder(out / _run_name(model))
        try:
            row, (truth, predicted[model]) = _compared(Path(data), model, run, out / "split.json", shared,
                                                       progress=progress, device=device, robustness=robustness,
                                                       severities=severities)
        except (ValueError, RuntimeError, OSError) as error:
            console.print(f"[red]{model}: not compared: {error}")
            result["failed"].append({"name": model, "error": str(error)})
        else:
            result["rows"].append(row)
            result.update(split=run.read_metrics().get("split"), mcnemar=pairwise_mcnemar(truth, predicted))
        write_json(out / "comparison.json", result, default=float)
    if result["rows"]:
        plots.plot_comparison(result["rows"], out / "plots" / "comparison.png")
        render_comparison_report(out)
    return result


def _compared(data: Path, model: str, run: RunFolder, split_file: Path, recipe: Recipe, *, progress: bool,
              device, robustness: bool, severities: Sequence[int]) -> tuple[dict, tuple[np.ndarray, np.ndarray]]:
    """One model trained (or reused) and measured: its table row and (true, predicted) test labels."""
    settings, note = model_overrides(model, recipe)
    if note and progress:
        console.print(f"{model}: {note}")
    _train_one(data, model, run, split_file, recipe=recipe, progress=progress, device=device, overrides=settings)
    row = _row(model, run, device=device, robustness=robustness, severities=severities)
    if note:
        row["note"] = note
    return row, _predictions(run)
