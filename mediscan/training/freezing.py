"""Which pretrained weights fine-tuning keeps fixed: the model's early layers and its large depthwise filters.

Depthwise filters larger than 3 x 3 (EfficientNet's 5 x 5) are cheap to run but, on a CPU, their
weight gradient is the slowest kernel of a training step: oneDNN computes it about 25 times slower
than the filter's forward pass (3 x 3 filters have a fast kernel). In EfficientNet-Lite0 fine-tuned
at 128 px the nine 5 x 5 depthwise filters after the first two stages held 0.2 M of the 3.4 M weights
and cost a fifth of each step; keeping their ImageNet values let the same budget see about 20% more
images (docs/measurements.md, stop 31). The pointwise convolutions, batch norms and the head still train.

Which layers are early is the model's declaration (`ModelConfig.early_layers`, e.g. in models.timm_models).

Tiny images (28-64 px, upsampled) look little like the photographs those layers learnt from, and a
recipe with `tiny_train_all` trains every layer for them when the budget fits enough epochs that way:
on PneumoniaMNIST it raised the test AUC on 2 cores (~16 epochs) and lowered it on one core (9 epochs)
and in a 2-minute budget (2 epochs; docs/measurements.md, stop 42).
"""

from __future__ import annotations

import copy
import dataclasses
import time

import torch
from torch import nn

from mediscan.forward import uses_channels_last
from mediscan.models import model_config
from mediscan.training.recipes import Recipe

MIN_EPOCHS_TO_TRAIN_ALL = 12
PROBE_STEPS = 2


def freeze_early_layers(model: nn.Module, model_name: str) -> int:
    """Stop gradients through the model's declared early layers; returns parameters frozen."""
    frozen = 0
    for layer in model_config(model_name).early_layers:
        for parameter in model.get_submodule(layer).parameters():
            parameter.requires_grad_(False)
            frozen += parameter.numel()
    return frozen


def is_large_depthwise(module: nn.Module) -> bool:
    """A depthwise convolution (one filter per channel) with a kernel larger than 3 x 3."""
    return (isinstance(module, nn.Conv2d) and module.groups > 1 and module.groups == module.in_channels
            and max(module.kernel_size) > 3)


def freeze_large_depthwise(model: nn.Module) -> int:
    """Keep the still-trainable depthwise filters larger than 3 x 3 fixed; returns parameters frozen."""
    frozen = 0
    for module in model.modules():
        if is_large_depthwise(module) and module.weight.requires_grad:
            module.weight.requires_grad_(False)
            frozen += module.weight.numel()
    return frozen


def freeze_pretrained(model: nn.Module, recipe: Recipe) -> int:
    """What the recipe keeps fixed of the pretrained weights it fine-tunes; returns parameters frozen."""
    frozen = freeze_early_layers(model, recipe.model) if recipe.freeze_early else 0
    if recipe.freeze_depthwise:
        frozen += freeze_large_depthwise(model)
    return frozen


def training_images_per_second(model: nn.Module, *, batch_size: int, channels: int, size: int,
                               device: torch.device) -> float:
    """Images/s of forward and backward passes with every layer trained (a copy of the model, random
    images, after a warm-up step)."""
    probe = copy.deepcopy(model).train().requires_grad_(True)
    images = torch.randn(batch_size, channels, size, size, device=device)
    if uses_channels_last(device):
        probe = probe.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    probe(images).sum().backward()
    _wait_for(device)
    started = time.perf_counter()
    for _ in range(PROBE_STEPS):
        probe(images).sum().backward()
    _wait_for(device)
    return PROBE_STEPS * batch_size / (time.perf_counter() - started)


def _wait_for(device: torch.device) -> None:
    """Let a GPU finish its queued work, so that the clock reads only the steps in between."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_all_for_tiny(recipe: Recipe, epochs_affordable: float) -> tuple[Recipe, str]:
    """The recipe training every layer when the budget fits `MIN_EPOCHS_TO_TRAIN_ALL` epochs that way,
    else as it was; and why."""
    if epochs_affordable >= MIN_EPOCHS_TO_TRAIN_ALL:
        return dataclasses.replace(recipe, freeze_early=False, freeze_depthwise=False), (
            f"every layer trained: tiny images, and the budget fits ~{epochs_affordable:.0f} epochs that way "
            f"(>= {MIN_EPOCHS_TO_TRAIN_ALL}; upsampled tiny images look little like the photographs the "
            "early layers learnt from)")
    return recipe, (f"early pretrained layers kept fixed: training every layer would fit ~{epochs_affordable:.0f} "
                    f"epochs in the budget, fewer than the {MIN_EPOCHS_TO_TRAIN_ALL} it needs to pay off")
