"""What a run has done so far: epochs, history, the best epoch, the weights the bundle will ship (the
last epoch's or the best's, `Recipe.keep`); checkpointed every epoch (resumable), with the early-stopping
rule."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mediscan.bundle import load_checkpoint, save_checkpoint
from mediscan.forward import Outputs
from mediscan.run_folder import RunFolder

CHECKPOINTED = ("epoch", "history", "best", "train_seconds", "step")


def is_better(row: dict, best: dict | None) -> bool:
    """Higher validation accuracy wins; lower validation loss breaks ties."""
    if best is None:
        return True
    if np.isnan(row["val_acc"]):
        return True
    key = (row["val_acc"], -row["val_loss"])
    return key > (best["val_acc"], -best["val_loss"])


@dataclass
class FitResult:
    """The finished loop: history, the kept weights (of `kept_epoch`), the best validation epoch, how
    long and how fast it trained."""

    history: list[dict]
    kept_state: dict
    kept_epoch: int
    best_epoch: int
    seconds: float
    images_per_second: float
    class_bias: np.ndarray  # training.decision_prior: added to the logits before softmax
    images_seen: int = 0
    kept_val_outputs: Outputs | None = None  # its validation logits and features; None after some resumes


@dataclass
class RunState:
    """The epoch loop's bookkeeping; `CHECKPOINTED` fields go into last.safetensors."""

    kept_weights: dict[str, torch.Tensor]
    epoch: int = 0
    history: list[dict] = field(default_factory=list)
    best: dict | None = None  # {"epoch", "val_acc", "val_loss"} of the best epoch
    train_seconds: float = 0.0
    step: int = 0
    kept_val_outputs: Outputs | None = None
    images_seen: int = 0
    fit_seconds: float = 0.0  # in training steps only (images_per_second)
    keep_last: bool = False  # ship the last epoch's weights (annealed schedules), not the best validated

    @classmethod
    def begin(cls, run_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer, *,
              resume: bool, averaged: nn.Module | None = None, keep_last: bool = False) -> RunState:
        """A fresh state, or (resume) the checkpoint's, restoring the model, optimizer and weight
        average too."""
        if not resume:
            return cls(copy.deepcopy(model.state_dict()), keep_last=keep_last)
        saved, kept_weights = load_checkpoint(run_dir, model, optimizer, averaged)
        return cls(kept_weights, **{name: saved[name] for name in CHECKPOINTED}, keep_last=keep_last)

    @property
    def best_epoch(self) -> int:
        return self.best["epoch"] if self.best else self.epoch

    @property
    def kept_epoch(self) -> int:
        """The epoch whose weights the bundle gets: the latest with `keep_last`, else the best."""
        return self.history[-1]["epoch"] if self.keep_last and self.history else self.best_epoch

    def count(self, row: dict, world_size: int) -> None:
        """Add a training epoch's images and seconds (every rank trained as many)."""
        self.images_seen += row["images"] * world_size
        self.fit_seconds += row["seconds"]

    def record(self, row: dict, model: nn.Module, val_outputs: Outputs | None) -> None:
        """Add an epoch's history row; keep its weights and validation outputs (None: finishing scores
        the validation split again) when it is the best (or, with `keep_last`, always)."""
        self.history.append(row)
        better = is_better(row, self.best)
        if better:
            self.best = {k: row[k] for k in ("epoch", "val_acc", "val_loss")}
        if better or self.keep_last:
            self.kept_weights, self.kept_val_outputs = copy.deepcopy(model.state_dict()), val_outputs

    def save(self, run_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer, *,
             epoch: int, step: int, train_seconds: float, averaged: nn.Module | None = None) -> None:
        """Checkpoint (the weight average, and the kept weights too when they are an earlier epoch's)
        and history.csv."""
        self.epoch, self.step, self.train_seconds = epoch, step, train_seconds
        state = {name: getattr(self, name) for name in CHECKPOINTED}
        save_checkpoint(run_dir, model, optimizer, state,
                        best=None if self.kept_epoch == epoch else self.kept_weights, averaged=averaged)
        RunFolder(run_dir).write_history(self.history)

    def patience_over(self, patience: int | None) -> bool:
        """Early stopping: `patience` epochs without a better validation result."""
        return patience is not None and self.epoch - self.best["epoch"] >= patience

    def result(self, started: float, class_bias: np.ndarray) -> FitResult:
        return FitResult(self.history, self.kept_weights, self.kept_epoch, self.best_epoch,
                         time.perf_counter() - started, self.images_seen / max(self.fit_seconds, 1e-9),
                         class_bias, self.images_seen, self.kept_val_outputs)
