"""Which pretrained weights fine-tuning keeps fixed: the model's early layers and its large depthwise filters.

Depthwise filters larger than 3 x 3 (EfficientNet's 5 x 5) are cheap to run but, on a CPU, their
weight gradient is the slowest kernel of a training step: oneDNN computes it about 25 times slower
than the filter's forward pass (3 x 3 filters have a fast kernel). In EfficientNet-Lite0 fine-tuned
at 128 px the nine 5 x 5 depthwise filters after the first two stages held 0.2 M of the 3.4 M weights
and cost a fifth of each step; keeping their ImageNet values let the same budget see about 20% more
images (docs/measurements.md, stop 31). The pointwise convolutions, batch norms and the head still train.

Which layers are early is the model's declaration (`ModelConfig.early_layers`, e.g. in models.timm_models).
"""

from __future__ import annotations

from torch import nn

from mediscan.models import model_config
from mediscan.training.recipes import Recipe


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
