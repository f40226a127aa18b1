"""`RunFolder`: the files of one run folder by name, and the one place each is read and written.

    RUN/model.json, model.safetensors   the bundle (`bundle.save_bundle` / `load_bundle`)
    RUN/ood.safetensors, model.onnx     OOD statistics, the ONNX export
    RUN/last.safetensors, recipe.json   the resumable training state and its recipe
    RUN/split.json, history.csv         the split's sample keys, one row per epoch
    RUN/metrics.json, predictions.csv   the test split's evaluation
    RUN/evaluations/NAME.json, NAME_predictions.csv, NAME_seen.csv, NAME/*.png   other data sets
    RUN/robustness.json, localisation.json, plots/*.png, report.html
"""

from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from mediscan.bundle_meta import BundleError, validate_meta
from mediscan.data.split import Split
from mediscan.files import BadFileError, read_csv, read_json, write_csv, write_json

META_FILE = "model.json"
WEIGHTS_FILE = "model.safetensors"
CHECKPOINT_FILE = "last.safetensors"
LEGACY_CHECKPOINT_STATE = "last.json"  # the training state, beside last.safetensors in earlier runs
OOD_FILE = "ood.safetensors"
ONNX_FILE = "model.onnx"
HISTORY_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds")
RETRAIN = "train again, or restore the run folder from a backup"
RUNS = Path("runs")  # where a run goes when no folder is named


def new_run_folder(prefix: str = "", parent: Path = RUNS) -> Path:
    """Create PARENT/PREFIX<date-time> and return it; -2, -3, ... are appended when a run started in
    the same second holds the name, so two trainings never write into one folder. Processes of one
    torchrun job cannot agree on a new name: they must be given one."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError("the processes of a torchrun job need one run folder named for all of them: "
                         "pass --out RUN")
    stamp = prefix + time.strftime("%Y%m%d-%H%M%S")
    parent.mkdir(parents=True, exist_ok=True)
    for number in itertools.count(1):
        path = parent / (stamp if number == 1 else f"{stamp}-{number}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path


class RunFile:
    """A file of every run folder: `RunFolder(run).split_file` is `run / "split.json"`."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, run: RunFolder | None, owner: type | None = None):
        return self if run is None else run.path / self.name


@dataclass(frozen=True)
class RunFolder:
    """A run folder: what `mediscan train` writes and every other command reads."""

    path: Path
    meta_file = RunFile(META_FILE)
    weights_file = RunFile(WEIGHTS_FILE)
    checkpoint_file = RunFile(CHECKPOINT_FILE)
    onnx_file = RunFile(ONNX_FILE)
    recipe_file = RunFile("recipe.json")
    split_file = RunFile("split.json")
    history_file = RunFile("history.csv")
    metrics_file = RunFile("metrics.json")
    robustness_file = RunFile("robustness.json")
    localisation_file = RunFile("localisation.json")
    report_file = RunFile("report.html")
    plots = RunFile("plots")
    evaluations = RunFile("evaluations")

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    def evaluation_file(self, name: str, suffix: str = ".json") -> Path:
        """evaluations/NAME.json, or NAME_predictions.csv, NAME_seen.csv with that suffix."""
        return self.evaluations / f"{name}{suffix}"

    def predictions_file(self, evaluation: str | None = None) -> Path:
        """predictions.csv of the test split, or evaluations/NAME_predictions.csv of another data set."""
        if evaluation is None:
            return self.path / "predictions.csv"
        return self.evaluation_file(evaluation, "_predictions.csv")

    def read_meta(self) -> dict:
        """model.json, validated; BundleError names the file, the problem and the fix."""
        if not self.meta_file.is_file():
            raise BundleError(f"{self.path}: no {META_FILE} here. Pass a run folder written by "
                              "`mediscan train` (it holds model.safetensors and model.json).")
        try:
            meta = read_json(self.meta_file, fix=RETRAIN)
        except BadFileError as error:
            raise BundleError(str(error)) from None
        return validate_meta(meta, self.meta_file)

    def write_meta(self, meta: dict) -> None:
        """(Re)write model.json atomically."""
        write_json(self.meta_file, meta, default=str)

    def read_recipe(self) -> dict:
        return read_json(self.recipe_file, fix="train again without --resume")

    def write_recipe(self, recipe: dict) -> None:
        write_json(self.recipe_file, recipe)

    def read_split(self) -> Split:
        """The split the run was trained on; a clear error when split.json is missing."""
        if not self.split_file.is_file():
            raise BadFileError(
                f"{self.split_file}: missing, so the run's test images are unknown (a new split would "
                "mix training images into the test set). Restore split.json from the original run "
                "folder, or evaluate on another data set: mediscan evaluate RUN DATA")
        return Split.load(self.split_file)

    def write_split(self, split: Split) -> None:
        split.save(self.split_file)

    def read_metrics(self) -> dict:
        return read_json(self.metrics_file, fix="evaluate the run again: mediscan evaluate RUN")

    def write_metrics(self, metrics: dict) -> None:
        write_json(self.metrics_file, metrics, default=float)

    def write_evaluation(self, name: str, result: dict) -> None:
        write_json(self.evaluation_file(name), result, default=float)

    def read_history(self) -> list[dict[str, str]]:
        """history.csv rows as dicts of strings (empty when the file is missing)."""
        return read_csv(self.history_file) if self.history_file.is_file() else []

    def write_history(self, history: Iterable[dict]) -> None:
        write_csv(self.history_file, HISTORY_COLUMNS,
                  ([row.get(column, "") for column in HISTORY_COLUMNS] for row in history))

    def read_predictions(self, evaluation: str | None = None) -> list[dict[str, str]]:
        return read_csv(self.predictions_file(evaluation))

    def write_predictions(self, header: Sequence[str], rows: Iterable[Sequence],
                          evaluation: str | None = None) -> None:
        write_csv(self.predictions_file(evaluation), header, rows)
