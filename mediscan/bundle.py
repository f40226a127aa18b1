"""A model bundle is model.safetensors + model.json: weights and everything needed to use them, no pickle."""

from __future__ import annotations

import json
import platform
from datetime import datetime, timezone
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

import mediscan
from mediscan.inference import uses_channels_last
from mediscan.models import create_model

WEIGHTS_FILE = "model.safetensors"
META_FILE = "model.json"
CHECKPOINT_FILE = "last.safetensors"
CHECKPOINT_STATE = "last.json"


class BundleError(ValueError):
    """A run folder that cannot be loaded, with what to do about it."""


def versions() -> dict[str, str]:
    """Library versions recorded in every bundle."""
    import numpy
    import torchvision

    return {"mediscan": mediscan.__version__, "torch": torch.__version__,
            "torchvision": torchvision.__version__, "numpy": numpy.__version__,
            "python": platform.python_version()}


def _contiguous_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def save_bundle(run_dir: Path, model: nn.Module, meta: dict) -> None:
    """Write the weights and model.json (created time and versions added)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_file(_contiguous_state(model), str(run_dir / WEIGHTS_FILE))
    meta = {**meta, "versions": versions(),
            "created": meta.get("created") or datetime.now(timezone.utc).isoformat()}
    write_meta(run_dir, meta)


def write_meta(run_dir: Path, meta: dict) -> None:
    """(Re)write model.json."""
    (Path(run_dir) / META_FILE).write_text(json.dumps(meta, indent=2, default=str))


def read_meta(run_dir: Path) -> dict:
    """model.json of a run folder, with an actionable error when it is missing or broken."""
    path = Path(run_dir) / META_FILE
    if not path.is_file():
        raise BundleError(f"{run_dir}: no {META_FILE} here. Pass a run folder written by "
                          "`mediscan train` (it holds model.safetensors and model.json).")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise BundleError(f"{path}: not valid JSON ({error}); re-train or restore the file.") from None


def load_bundle(run_dir: Path, *, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the network named in model.json and load its safetensors weights (eval mode)."""
    run_dir = Path(run_dir)
    meta = read_meta(run_dir)
    weights = run_dir / WEIGHTS_FILE
    if not weights.is_file():
        raise BundleError(f"{run_dir}: {WEIGHTS_FILE} is missing; the run did not finish or "
                          "the folder was copied incompletely.")
    model = create_model(meta["model"], len(meta["classes"]))
    model.load_state_dict(load_file(str(weights)))
    model = model.to(device)
    if uses_channels_last(device):
        model = model.to(memory_format=torch.channels_last)
    return model.eval(), meta


def save_checkpoint(run_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                    state: dict) -> None:
    """Resumable training state: model and optimizer tensors in safetensors, the rest in JSON."""
    tensors = {f"model.{k}": v for k, v in _contiguous_state(model).items()}
    opt = optimizer.state_dict()
    scalars: dict[str, dict] = {}
    for index, entries in opt["state"].items():
        for name, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"optim.{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[name] = value
    save_file(tensors, str(Path(run_dir) / CHECKPOINT_FILE))
    payload = {**state, "param_groups": opt["param_groups"], "optim_scalars": scalars}
    (Path(run_dir) / CHECKPOINT_STATE).write_text(json.dumps(payload, indent=2, default=str))


def load_checkpoint(run_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """Restore what save_checkpoint wrote; returns the JSON state (epoch, history, ...)."""
    run_dir = Path(run_dir)
    if not (run_dir / CHECKPOINT_FILE).is_file():
        raise BundleError(f"{run_dir}: nothing to resume ({CHECKPOINT_FILE} is missing).")
    payload = json.loads((run_dir / CHECKPOINT_STATE).read_text())
    tensors = load_file(str(run_dir / CHECKPOINT_FILE))
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    opt_state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            opt_state.setdefault(int(index), {})[name] = value
    for index, entries in payload.pop("optim_scalars").items():
        opt_state.setdefault(int(index), {}).update(entries)
    optimizer.load_state_dict({"state": opt_state, "param_groups": payload.pop("param_groups")})
    return payload
