"""A model bundle is model.safetensors + model.json: weights and everything needed to use them, no pickle."""

from __future__ import annotations

import json
import platform
from datetime import datetime, timezone
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

import mediscan
from mediscan.bundle_meta import BundleError
from mediscan.files import BadFileError, atomic_path, read_json
from mediscan.forward import uses_channels_last
from mediscan.models import create_model
from mediscan.run_folder import LEGACY_CHECKPOINT_STATE, META_FILE, RETRAIN, WEIGHTS_FILE, RunFolder


def versions() -> dict[str, str]:
    """Library versions recorded in every bundle."""
    import numpy
    import torchvision

    return {"mediscan": mediscan.__version__, "torch": torch.__version__,
            "torchvision": torchvision.__version__, "numpy": numpy.__version__,
            "python": platform.python_version()}


def _contiguous_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def _save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict | None = None) -> None:
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def save_bundle(run_dir: Path, model: nn.Module, meta: dict) -> None:
    """Write the weights and model.json (created time and versions added), each atomically."""
    run = RunFolder(run_dir)
    _save_tensors(run.weights_file, _contiguous_state(model))
    run.write_meta({**meta, "versions": versions(),
                    "created": meta.get("created") or datetime.now(timezone.utc).isoformat()})


def _tensor_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Names and shapes from a safetensors header (nothing else is read)."""
    try:
        with safe_open(str(path), framework="pt") as file:
            return {key: tuple(file.get_slice(key).get_shape()) for key in file.keys()}
    except (SafetensorError, OSError) as error:
        raise BundleError(f"{path}: not a readable safetensors file ({error}); {RETRAIN}.") from None


def check_weights(path: Path, meta: dict) -> None:
    """Refuse weights that do not fit the network model.json describes, before building it."""
    with torch.device("meta"):  # shapes only: no memory, however many classes
        expected = {k: tuple(v.shape) for k, v in
                    create_model(meta["model"], len(meta["classes"])).state_dict().items()}
    found = _tensor_shapes(path)
    missing, unexpected = sorted(expected.keys() - found.keys()), sorted(found.keys() - expected.keys())
    wrong = [f"{k} is {list(found[k])}, needs {list(expected[k])}"
             for k in expected if k in found and found[k] != expected[k]]
    problems = ([f"missing {len(missing)} tensor(s) such as {missing[0]}"] if missing else []) + \
        ([f"{len(unexpected)} unknown tensor(s) such as {unexpected[0]}"] if unexpected else []) + wrong[:3]
    if problems:
        raise BundleError(f"{path}: does not fit the {meta['model']} with {len(meta['classes'])} classes "
                          f"that {META_FILE} describes ({'; '.join(problems)}); model.json and "
                          f"{WEIGHTS_FILE} must come from the same run: {RETRAIN}.")


def load_bundle(run_dir: Path, *, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the network named in model.json and load its safetensors weights (eval mode)."""
    run = RunFolder(run_dir)
    meta = run.read_meta()
    weights = run.weights_file
    if not weights.is_file():
        raise BundleError(f"{run_dir}: {WEIGHTS_FILE} is missing; the run did not finish or "
                          "the folder was copied incompletely.")
    check_weights(weights, meta)
    model = create_model(meta["model"], len(meta["classes"]))
    model.load_state_dict(load_file(str(weights)))
    model = model.to(device)
    if uses_channels_last(device):
        model = model.to(memory_format=torch.channels_last)
    return model.eval(), meta


def save_checkpoint(run_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                    state: dict, best: dict[str, torch.Tensor] | None = None,
                    averaged: nn.Module | None = None) -> None:
    """Resumable training state in one atomic safetensors file: model, optimizer, the weight
    average (recipe `ema`) and, when an earlier epoch was better, the best weights as tensors;
    epoch, history, ... as JSON metadata. Without `best`, the best weights are the average's
    (when there is one) or the model's."""
    tensors = {f"model.{k}": v for k, v in _contiguous_state(model).items()}
    tensors.update({f"best.{k}": v.detach().cpu().contiguous() for k, v in (best or {}).items()})
    if averaged is not None:
        tensors.update({f"ema.{k}": v for k, v in _contiguous_state(averaged).items()})
    opt = optimizer.state_dict()
    scalars: dict[str, dict] = {}
    for index, entries in opt["state"].items():
        for name, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"optim.{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[name] = value
    payload = {**state, "param_groups": opt["param_groups"], "optim_scalars": scalars}
    _save_tensors(RunFolder(run_dir).checkpoint_file, tensors,
                  {"state": json.dumps(payload, default=str)})


def _read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, JSON state) of last.safetensors; earlier runs kept the state in last.json."""
    try:
        tensors = load_file(str(path))
        with safe_open(str(path), framework="pt") as file:
            text = (file.metadata() or {}).get("state")
        if text is not None:
            return tensors, json.loads(text)
        return tensors, read_json(path.with_name(LEGACY_CHECKPOINT_STATE), fix=RETRAIN)
    except (SafetensorError, OSError, json.JSONDecodeError, BadFileError) as error:
        raise BundleError(f"{path}: cannot resume from this checkpoint ({error}); "
                          "train again without --resume.") from None


def load_checkpoint(run_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                    averaged: nn.Module | None = None) -> tuple[dict, dict[str, torch.Tensor]]:
    """Restore what save_checkpoint wrote (the weight average too, when given and saved);
    returns (JSON state: epoch, history, ..., best weights)."""
    path = RunFolder(run_dir).checkpoint_file
    if not path.is_file():
        raise BundleError(f"{run_dir}: nothing to resume ({path.name} is missing).")
    tensors, payload = _read_checkpoint(path)
    weights = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    average = {k[4:]: v for k, v in tensors.items() if k.startswith("ema.")}
    scored = {k[7:]: v for k, v in average.items() if k.startswith("module.")} or weights  # what was validated
    best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")} or scored
    opt_state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            opt_state.setdefault(int(index), {})[name] = value
    try:
        for index, entries in payload.pop("optim_scalars").items():
            opt_state.setdefault(int(index), {}).update(entries)
        model.load_state_dict(weights)
        if averaged is not None and average:
            averaged.load_state_dict(average)
        optimizer.load_state_dict({"state": opt_state, "param_groups": payload.pop("param_groups")})
    except (KeyError, RuntimeError, ValueError) as error:
        raise BundleError(f"{path}: does not match this run's model or optimizer ({error}); "
                          "train again without --resume.") from None
    return payload, best
