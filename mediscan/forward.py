"""Batched forward passes over uint8 images, shared by training, evaluation and prediction."""

from __future__ import annotations

import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from mediscan.transforms import normalize


def pick_device(requested: str | None = None) -> torch.device:
    """The requested device, else CUDA, else Apple MPS, else CPU."""
    if requested:
        return torch.device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def uses_channels_last(device: torch.device | str) -> bool:
    """Channels-last pays on CUDA and on CPU (oneDNN): 1.1-1.7x measured for the registry's nets."""
    return torch.device(device).type in ("cpu", "cuda")


def autocast_for(device: torch.device):
    """bf16 autocast on CUDA (where supported), full precision elsewhere."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


CPU_BATCH_PIXELS = 32 * 96 * 96  # pixels per inference batch on a CPU: activations that stay in its caches


def inference_batch_size(device: torch.device | str, size: int) -> int:
    """Images per forward pass: 256 on a GPU; on a CPU about CPU_BATCH_PIXELS (8-256 images), because
    batches whose activations outgrow the caches run slower per image (EfficientNet-Lite0 on 2 cores:
    batch 32 460 images/s at 96 px, batch 256 321; 128 px: batch 8-24 250-310, batch 256 161)."""
    if torch.device(device).type != "cpu":
        return 256
    return int(np.clip(round(CPU_BATCH_PIXELS / max(size, 1) ** 2 / 8) * 8, 8, 256))


@dataclass
class Outputs:
    """One forward pass over a batch: logits (N x K) and, when asked for, the head's input features (N x D)."""

    logits: np.ndarray
    features: np.ndarray | None = None


@contextmanager
def captured_inputs(layer: nn.Module | None):
    """Collect the (flattened, float) input of `layer` on every forward call into the yielded list."""
    captured: list[torch.Tensor] = []
    if layer is None:
        yield captured
        return
    handle = layer.register_forward_pre_hook(
        lambda _module, args: captured.append(args[0].detach().flatten(1).float()))
    try:
        yield captured
    finally:
        handle.remove()


def tta_logits(model: nn.Module, x: torch.Tensor, tta: bool) -> torch.Tensor:
    """Float logits of a normalised batch; `tta` averages them with the horizontal flip's."""
    logits = model(x).float()
    if tta:
        logits = (logits + model(torch.flip(x, dims=[3])).float()) / 2
    return logits


@torch.inference_mode()
def batched_outputs(model: nn.Module, images: np.ndarray | torch.Tensor, *, mean, std,
                    device: torch.device | str = "cpu", batch_size: int | None = None, tta: bool = False,
                    feature_layer: nn.Module | None = None) -> Outputs:
    """Logits (float32, N x K) for uint8 images N x C x S x S, plus `feature_layer`'s input
    features from the same pass when given; `tta` averages both with the h-flip. `batch_size`
    None: `inference_batch_size` for the device and the image size."""
    device = torch.device(device)
    batch_size = batch_size or inference_batch_size(device, images.shape[-1])
    model.eval()
    logits_out, features_out = [], []
    for start in range(0, len(images), batch_size):
        chunk = torch.from_numpy(np.array(images[start:start + batch_size]))  # writable copy
        x = normalize(chunk.to(device, non_blocking=True), mean, std)
        if uses_channels_last(device):
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast_for(device), captured_inputs(feature_layer) as features:
            logits = tta_logits(model, x, tta)
        logits_out.append(logits.cpu())
        if features:
            features_out.append((sum(features) / len(features)).cpu())
    if not logits_out:
        return Outputs(np.zeros((0, 0), dtype=np.float32))
    return Outputs(torch.cat(logits_out).numpy(),
                   torch.cat(features_out).numpy() if features_out else None)


def batched_logits(model: nn.Module, images: np.ndarray | torch.Tensor, *, mean, std,
                   device: torch.device | str = "cpu", batch_size: int | None = None,
                   tta: bool = False) -> np.ndarray:
    """Logits (float32, N x K) for uint8 images N x C x S x S; `tta` averages with the h-flip."""
    return batched_outputs(model, images, mean=mean, std=std, device=device,
                           batch_size=batch_size, tta=tta).logits


def images_per_second(logits_of: Callable[[np.ndarray], np.ndarray], images: np.ndarray, *,
                      device: torch.device | str = "cpu", batch_size: int = 256, repeats: int = 3) -> float:
    """Throughput of `logits_of` (e.g. `Classifier.logits_batch`) on these images (best of `repeats`,
    after a warm-up with one inference batch: a smaller one left the first timed pass 2x slow)."""
    sample = np.asarray(images[:batch_size])
    logits_of(sample[:inference_batch_size(device, sample.shape[-1])])
    best = float("inf")
    for _ in range(repeats):
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        logits_of(sample)
        best = min(best, time.perf_counter() - started)
    return len(sample) / best
