"""The optimizer, the loss and the learning rate a recipe asks for."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from mediscan.training.recipes import Recipe
from mediscan.training.schedule import lr_at

OPTIMIZERS = ("adamw", "adam", "sgd", "adadelta")


def create_optimizer(model: nn.Module, recipe: Recipe, device: torch.device) -> torch.optim.Optimizer:
    """The recipe's optimizer over the trainable parameters; no weight decay on biases and norms."""
    fused = {"fused": True} if device.type == "cuda" else {}
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in trainable if p.ndim > 1], "weight_decay": recipe.weight_decay},
              {"params": [p for p in trainable if p.ndim <= 1], "weight_decay": 0.0}]
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=recipe.lr, **fused)
    if recipe.optimizer == "adam":
        return torch.optim.Adam(groups, lr=recipe.lr, **fused)
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum, nesterov=True)
    if recipe.optimizer == "adadelta":
        return torch.optim.Adadelta(groups, lr=recipe.lr)
    raise ValueError(f"unknown optimizer {recipe.optimizer!r}; choose {', '.join(OPTIMIZERS)}")


def loss_class_weights(recipe: Recipe, labels: np.ndarray, num_classes: int) -> np.ndarray | None:
    """For `balance="weights"`, each class's loss weight (inverse frequency); else None."""
    if recipe.balance != "weights":
        return None
    counts = np.bincount(labels, minlength=num_classes).clip(min=1)
    return len(labels) / (num_classes * counts)


def create_criterion(recipe: Recipe, labels: np.ndarray, num_classes: int, device) -> nn.Module:
    """Cross-entropy with the recipe's label smoothing and, for `balance="weights"`, class weights."""
    weight = loss_class_weights(recipe, labels, num_classes)
    if weight is not None:
        weight = torch.tensor(weight, dtype=torch.float32, device=device)
    return nn.CrossEntropyLoss(weight=weight, label_smoothing=recipe.label_smoothing)


def set_learning_rate(optimizer: torch.optim.Optimizer, recipe: Recipe, progress: float) -> float:
    """Set every group's learning rate to the recipe's schedule at `progress` (0..1); returns it."""
    lr = lr_at(progress, base_lr=recipe.lr, schedule=recipe.schedule, warmup=recipe.warmup)
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr


def create_weight_average(model: nn.Module, recipe: Recipe) -> AveragedModel | None:
    """The exponential moving average of the weights and normalisation statistics the recipe's
    `ema` decay asks for (None: no average); validation and the bundle then use its weights."""
    if not recipe.ema:
        return None
    if not 0.0 < recipe.ema < 1.0:
        raise ValueError(f"ema={recipe.ema}: the decay must lie between 0 and 1 (e.g. 0.995), or be 0 for none")
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(recipe.ema), use_buffers=True)
