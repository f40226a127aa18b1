"""Learning rate as a function of training progress (0..1), so a time budget can drive it."""

from __future__ import annotations

import math


def lr_at(progress: float, *, base_lr: float, schedule: str, warmup: float = 0.1) -> float:
    """onecycle: linear warm-up to base_lr then cosine to ~0; cosine: cosine decay; constant."""
    progress = min(max(progress, 0.0), 1.0)
    if schedule == "constant":
        return base_lr
    if schedule == "cosine":
        return base_lr * 0.5 * (1 + math.cos(math.pi * progress))
    if schedule == "onecycle":
        if progress < warmup:
            return base_lr * (0.04 + 0.96 * progress / warmup)
        rest = (progress - warmup) / max(1e-8, 1 - warmup)
        return base_lr * (1e-3 + (1 - 1e-3) * 0.5 * (1 + math.cos(math.pi * rest)))
    raise ValueError(f"unknown schedule {schedule!r}; choose onecycle, cosine or constant")


def size_at(progress: float, *, start: int, full: int, ramp_end: float, step: int = 16) -> int:
    """Progressive resizing: the training input side at `progress`, growing linearly from
    `start` to `full` pixels until `ramp_end` (0..1), in multiples of `step`, then `full`."""
    if start >= full or progress >= ramp_end:
        return full
    size = start + (full - start) * max(progress, 0.0) / ramp_end
    return min(full, max(step, int(size // step) * step))
