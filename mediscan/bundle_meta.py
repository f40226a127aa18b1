"""model.json's contract: the fields every loader relies on, held to the bounds training writes within."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from mediscan.evaluation.calibration import TEMPERATURE_BOUNDS
from mediscan.models import model_config
from mediscan.transforms import Preprocess

MIN_CLASSES, MAX_CLASSES = 2, 1000
MAX_CLASS_NAME = 255  # a class is a folder name
MIN_STD = 1e-6  # a smaller std turns every normalised pixel into +-inf
REQUIRED = ("model", "classes", "preprocess", "mean", "std", "temperature")
FIX = "restore the model.json that `mediscan train` wrote for this run, or train again"


class BundleError(ValueError):
    """A run folder that cannot be loaded, with what to do about it."""


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _model_problems(name: Any) -> list[str]:
    if not isinstance(name, str) or not name:
        return [f"model must be a model name, got {name!r}"]
    try:
        model_config(name)
    except ValueError:
        return [f"unknown model {name!r} (see `mediscan models`)"]
    return []


def _class_problems(classes: Any) -> list[str]:
    if not isinstance(classes, list) or not MIN_CLASSES <= len(classes) <= MAX_CLASSES:
        count = len(classes) if isinstance(classes, list) else type(classes).__name__
        return [f"classes must be a list of {MIN_CLASSES} to {MAX_CLASSES} names, got {count}"]
    bad = [c for c in classes if not isinstance(c, str) or not c.strip() or len(c) > MAX_CLASS_NAME]
    if bad:
        return [f"class names must be non-empty strings of at most {MAX_CLASS_NAME} characters, "
                f"got {bad[0]!r}"]
    repeated = sorted({c for c in classes if classes.count(c) > 1})
    return [f"class names repeat: {repeated}"] if repeated else []


def _preprocess(settings: Any) -> tuple[Preprocess | None, list[str]]:
    if not isinstance(settings, dict):
        return None, [f"preprocess must be an object, got {type(settings).__name__}"]
    try:
        return Preprocess.from_dict(settings), []
    except (TypeError, ValueError) as error:
        return None, [f"preprocess: {error}"]


def _vector_problems(key: str, values: Any, channels: int | None, minimum: float) -> list[str]:
    if not isinstance(values, list) or not all(_finite(v) for v in values):
        return [f"{key} must be a list of finite numbers, got {values!r}"[:200]]
    if channels is not None and len(values) != channels:
        return [f"{key} has {len(values)} values for {channels} channel(s)"]
    if any(v < minimum for v in values):
        return [f"{key} values must be at least {minimum:g}, got {values}"]
    return []


def _temperature_problems(value: Any) -> list[str]:
    low, high = TEMPERATURE_BOUNDS
    if not _finite(value) or not low <= value <= high:
        return [f"temperature must be a number from {low:g} to {high:g} (what calibration fits), "
                f"got {value!r}"]
    return []


def _class_bias_problems(meta: dict) -> list[str]:
    """The optional class bias (training.decision_prior): one finite number per class."""
    if "class_bias" not in meta:
        return []
    values, classes = meta["class_bias"], meta["classes"]
    if not isinstance(values, list) or not all(_finite(v) for v in values):
        return [f"class_bias must be a list of finite numbers, got {values!r}"[:200]]
    if isinstance(classes, list) and len(values) != len(classes):
        return [f"class_bias has {len(values)} values for {len(classes)} classes"]
    return []


def _consistency_problems(meta: dict, preprocess: Preprocess | None) -> list[str]:
    problems = _class_bias_problems(meta)
    if "tta" in meta and not isinstance(meta["tta"], bool):
        problems.append(f"tta must be true or false, got {meta['tta']!r}")
    if preprocess is not None:
        for key, value in (("input_size", preprocess.size), ("channels", preprocess.channels)):
            if key in meta and meta[key] != value:
                problems.append(f"{key} is {meta[key]!r} but preprocess says {value}")
    return problems


def meta_problems(meta: Any) -> list[str]:
    """Everything wrong with a parsed model.json (empty when it can be loaded)."""
    if not isinstance(meta, dict):
        return [f"expected a JSON object, got {type(meta).__name__}"]
    missing = [key for key in REQUIRED if key not in meta]
    if missing:
        return [f"missing {', '.join(missing)}"]
    preprocess, problems = _preprocess(meta["preprocess"])
    channels = preprocess.channels if preprocess else None
    return (problems + _model_problems(meta["model"]) + _class_problems(meta["classes"])
            + _vector_problems("mean", meta["mean"], channels, -math.inf)
            + _vector_problems("std", meta["std"], channels, MIN_STD)
            + _temperature_problems(meta["temperature"]) + _consistency_problems(meta, preprocess))


def validate_meta(meta: Any, path: Path) -> dict:
    """`meta` if it can be loaded, else a BundleError naming the file and every problem."""
    problems = meta_problems(meta)
    if problems:
        raise BundleError(f"{path}: {'; '.join(problems)}. To fix: {FIX}.")
    return meta
