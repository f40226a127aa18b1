"""Which backend scores a training run's test split: ONNX Runtime on a CPU when the split is large.

On a CPU, ONNX Runtime runs the same network 1.8x faster than eager PyTorch (EfficientNet-Lite0 on
2 cores: 96 px 770 against 430 images/s, 128 px 440 against 240). Exporting and checking the graph
costs about a second, so it pays from a few thousand test images on: a 47,280-image official test
split (TissueMNIST) is scored in about 60 s instead of 110 s, and a time budget gives training the
difference. The graph is the one `mediscan export RUN --onnx` writes, checked against PyTorch the same
way; the run folder keeps it (model.onnx), ready to deploy.

A run that trained for a minute or more writes the graph too, whatever its test split: the export
is then under 2% of the run, and `mediscan predict` and `evaluate` run a current model.onnx by
default on a CPU (`predict.current_onnx`), at ONNX Runtime's speed."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from mediscan.progress import console

ONNX_MIN_TEST_IMAGES = 2000  # below: the export's second is not won back
SHIP_GRAPH_AFTER_SECONDS = 60.0  # of training: from there the export costs under 2% of the run


def scoring_backend(device: torch.device, n_test: int) -> str:
    """"onnx" for a large test split on a CPU, else "torch" (the network training just fitted)."""
    return "onnx" if device.type == "cpu" and n_test >= ONNX_MIN_TEST_IMAGES else "torch"


def ships_graph(device: torch.device, n_test: int, train_seconds: float) -> bool:
    """Whether train writes model.onnx: on a CPU, for a large test split (scored through it) or after
    a minute of training (deployed, it predicts 1.8x faster than PyTorch there)."""
    return scoring_backend(device, n_test) == "onnx" or (device.type == "cpu"
                                                          and train_seconds >= SHIP_GRAPH_AFTER_SECONDS)


def onnx_logits_of(model: nn.Module, *, mean, std, channels: int, size: int) -> Callable[[np.ndarray], np.ndarray]:
    """Logits of uint8 batches through an ONNX Runtime session of `model` as it is now (its speed is
    the trained network's: same graph, other weights), for the time plan's probe."""
    from mediscan.export import Deployable, onnx_bytes
    from mediscan.onnx_backend import OnnxBackend

    return OnnxBackend(onnx_bytes(Deployable(model, mean, std), channels, size)).logits_batch


def write_graph(run_dir: Path, announce: bool) -> bool:
    """Write run_dir/model.onnx, checked against PyTorch; False, with why, when the export fails (the
    run is then scored and predicted with PyTorch)."""
    from mediscan.export import export_onnx
    from mediscan.onnx_backend import ExportError

    try:
        export_onnx(run_dir)
    except (ExportError, RuntimeError) as error:
        if announce:
            console.print(f"[yellow]no model.onnx: the ONNX export failed ({error}); PyTorch scores and predicts")
        return False
    if announce:
        console.print(f"wrote {run_dir / 'model.onnx'} (checked against PyTorch): `mediscan predict` and "
                      "`evaluate` run it with ONNX Runtime on a CPU")
    return True
