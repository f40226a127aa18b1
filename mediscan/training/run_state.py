"""What a run has done so far: epochs, history, the best epoch and its weights; checkpointed every
epoch (resumable), with the early-stopping rule."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mediscan.bundle import load_checkpoint, save_checkpoint
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
    """The finished loop: history, the best epoch's weights, how long and how fast it trained."""

    history: list[dict]
    best_state: dict
    best_epoch: int
    seconds: float
    images_per_second: float
    images_seen: int = 0
    best_val_logits: np.ndarray | None = None  # None after a resume that kept an older best
    class_bias: np.ndarray | None = None  # training.decision_prior: added to the logits before softmax


@dataclass
class RunState:
    """The epoch loop's bookkeeping; `CHECKPOINTED` fields go into last.safetensors."""

    best_weights: dict[str, torch.Tensor]
    epoch: int = 0
    history: list[dict] = field(default_factory=list)
    best: dict | None = None  # {"epoch", "val_acc", "val_loss"} of the best epoch
    train_seconds: float = 0.0
    step: int = 0
    best_val_logits: np.ndarray | None = None
    images_seen: int = 0
    fit_seconds: float = 0.0  # in training steps only (images_per_second)

    @classmethod
    def begin(cls, run_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer, *,
              resume: bool, averaged: nn.Module | None = None) -> RunState:
        """A fresh state, or (resume) the checkpoint's, restoring the model, optimizer and weight
        average too."""
        if not resume:
            return cls(copy.deepcopy(model.state_dict()))
        saved, best_weights = load_checkpoint(run_dir, model, optimizer, averaged)
        return cls(best_weights, **{name: saved[name] for name in CHECKPOINTED})

    @property
    def best_epoch(self) -> int:
        return self.best["epoch"] if self.best else self.epoch

    def count(self, row: dict, world_size: int) -> None:
        """Add a training epoch's images and seconds (every rank trained as many)."""
        self.images_seen += row["images"] * world_size
        self.fit_seconds += row["seconds"]

    def record(self, row: dict, model: nn.Module, val_logits: np.ndarray | None) -> None:
        """Add an epoch's history row; keep its weights and validation logits when it is the best."""
        self.history.append(row)
        if is_better(row, self.best):
            self.best = {k: row[k] for k in ("epoch", "val_acc", "val_loss")}
            self.best_weights, self.best_val_logits = copy.deepcopy(model.state_dict()), val_logits

    def save(self, run_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer, *,
             epoch: int, step: int, train_seconds: float, averaged: nn.Module | None = None) -> None:
        """Checkpoint (the weight average, and the best weights too when an earlier epoch was better)
        and history.csv."""
        self.epoch, self.step, self.train_seconds = epoch, step, train_seconds
        state = {name: getattr(self, name) for name in CHECKPOINTED}
        save_checkpoint(run_dir, model, optimizer, state,
                        best=None if self.best_epoch == epoch else self.best_weights, averaged=averaged)
        RunFolder(run_dir).write_history(self.history)

    def patience_over(self, patience: int | None) -> bool:
        """Early stopping: `patience` epochs without a better validation result."""
        return patience is not None and self.epoch - self.best["epoch"] >= patience

    def result(self, started: float, class_bias: np.ndarray | None = None) -> FitResult:
        return FitResult(self.history, self.best_weights, self.best_epoch, time.perf_counter() - started,
                         self.images_seen / max(self.fit_seconds, 1e-9), self.images_seen,
                         self.best_val_logits, class_bias)
