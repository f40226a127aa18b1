"""Where ImageNet weights come from: an offline package, a local file or cache, or a download."""

from __future__ import annotations

import os
from pathlib import Path

import torch

WEIGHTS_DIR_ENV = "MEDISCAN_WEIGHTS_DIR"


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights were asked for but cannot be found or downloaded."""


def local_weights_file(filename: str) -> Path | None:
    """A weights file named `filename` in $MEDISCAN_WEIGHTS_DIR or torch's hub cache, if present."""
    folders = [os.environ.get(WEIGHTS_DIR_ENV, ""), Path(torch.hub.get_dir()) / "checkpoints"]
    for folder in folders:
        if folder and (Path(folder) / filename).is_file():
            return Path(folder) / filename
    return None


def load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """Load tensors from .safetensors, or a .pth/.pt restricted to tensors (weights_only)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


def fetch_url_weights(url: str, model_name: str) -> dict[str, torch.Tensor]:
    """Weights for `url`: from a local file of the same name, else downloaded into torch's cache."""
    filename = url.rsplit("/", 1)[-1]
    local = local_weights_file(filename)
    if local is not None:
        return load_state_dict_file(local)
    try:
        return torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=True)
    except Exception as error:  # network errors come in many types (URLError, HTTPError, OSError)
        raise WeightsUnavailableError(
            f"ImageNet weights for {model_name} are not available offline and the download of "
            f"{url} failed ({error.__class__.__name__}: {error}). Put {filename} in "
            f"${WEIGHTS_DIR_ENV} or {Path(torch.hub.get_dir()) / 'checkpoints'}, "
            "or train without --pretrained."
        ) from error
