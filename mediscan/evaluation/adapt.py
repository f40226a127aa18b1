"""Test-time adaptation to a new site: re-estimate batch-norm statistics on its images.

A scanner or hospital shifts the intensity statistics every batch-norm layer has learned; its
running mean and variance can be re-estimated from the new images alone (no labels), the
AdaBN idea (Li et al., 2016). Only those buffers change; weights stay as trained. Opt-in
(`mediscan evaluate RUN OTHER --adapt`), never written back to the run's bundle, and only
meaningful for a folder of images from one new source, a few hundred at least."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from mediscan.forward import uses_channels_last
from mediscan.transforms import normalize

MIN_IMAGES = 32  # fewer give noisier statistics than the trained ones


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def adapt_batchnorm(model: nn.Module, images: np.ndarray, *, mean, std,
                    device: torch.device | str = "cpu", batch_size: int = 128) -> int:
    """Replace every batch-norm layer's running statistics by those of `images` (uint8 N x C x S x S).

    Returns the number of layers adapted (0: the model has none, or too few images)."""
    layers = batchnorm_layers(model)
    if not layers or len(images) < MIN_IMAGES:
        return 0
    device = torch.device(device)
    saved = [(layer.momentum, layer.training) for layer in layers]
    model.eval()
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # a cumulative average over all batches
        layer.train()
    for start in range(0, len(images), batch_size):
        x = normalize(torch.from_numpy(np.array(images[start:start + batch_size])).to(device), mean, std)
        if uses_channels_last(device):
            x = x.contiguous(memory_format=torch.channels_last)
        model(x)
    for layer, (momentum, training) in zip(layers, saved):
        layer.momentum = momentum
        layer.train(training)
    return len(layers)
