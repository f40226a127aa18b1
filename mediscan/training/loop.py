"""The training step and epoch: uint8 batches, augmented and normalised on the device."""

from __future__ import annotations

import mmap
import os
import time
import weakref
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from mediscan.augment import BatchAugment
from mediscan.forward import autocast_for, uses_channels_last
from mediscan.lesion_synthesis import LesionSynthesis


@dataclass
class Budget:
    """Training progress in 0..1: the larger of steps done and time used."""

    total_steps: int
    seconds: float | None = None
    step: int = 0
    started: float = 0.0
    step_seconds: float = 0.0  # the last step's duration: a step that would overrun is not begun

    @property
    def progress(self) -> float:
        by_steps = self.step / max(1, self.total_steps)
        if self.seconds:
            return max(by_steps, (time.perf_counter() - self.started) / self.seconds)
        return by_steps

    def expected_steps(self) -> int:
        """The steps this budget is expected to allow: all of them, or as many as its seconds fit at
        the pace so far (validation passes included)."""
        if not self.seconds or self.step == 0:
            return self.total_steps
        pace = (time.perf_counter() - self.started) / self.step
        return min(self.total_steps, int(self.seconds / pace))

    @property
    def exhausted(self) -> bool:
        if self.seconds and time.perf_counter() + self.step_seconds - self.started >= self.seconds:
            return True
        return self.progress >= 1.0


class StreamedImages:
    """uint8 images gathered per batch from a memory-mapped cache, for data sets larger than RAM.

    Rows of a memory-mapped .npy file are read with os.preadv into each fresh batch, so the
    pages go to the kernel's page cache, not into this process: resident memory stays at a
    few batches however much of the file is read (a plain memmap index would map every page
    it touches into the process). Any other array is indexed directly."""

    device = torch.device("cpu")

    def __init__(self, images: np.ndarray, rows: np.ndarray) -> None:
        self.images, self.rows = images, np.asarray(rows)
        self.row_bytes = int(np.prod(images.shape[1:]))
        self._file = _mapped_file(images)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: torch.Tensor) -> torch.Tensor:
        rows = self.rows[index.cpu().numpy()]
        order = np.argsort(rows, kind="stable")  # read the file front to back
        batch = np.empty((len(rows), *self.images.shape[1:]), dtype=np.uint8)
        if self._file is None:
            batch[order] = self.images[rows[order]]
        else:
            self._read_rows(batch, rows, order)
        return torch.from_numpy(batch)

    def _read_rows(self, batch: np.ndarray, rows: np.ndarray, order: np.ndarray) -> None:
        fd, offset = self._file
        for slot in order:
            buffer = memoryview(batch[slot]).cast("B")
            got = os.preadv(fd, [buffer], offset + int(rows[slot]) * self.row_bytes)
            if got != self.row_bytes:
                raise OSError(f"short read from {self.images.filename}: row {rows[slot]} ({got} of "
                              f"{self.row_bytes} bytes); the cache file is truncated, delete it")


def _mapped_file(images: np.ndarray) -> tuple[int, int] | None:
    """(file descriptor, data offset) of a whole C-contiguous memmap (not a view), else None."""
    if not (isinstance(images, np.memmap) and isinstance(images.base, mmap.mmap)
            and images.flags.c_contiguous and images.filename and hasattr(os, "preadv")):
        return None
    fd = os.open(images.filename, os.O_RDONLY)
    weakref.finalize(images, os.close, fd)
    return fd, int(images.offset)


def physical_memory() -> int:
    """Bytes of RAM on this machine."""
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def image_source(images: np.ndarray, rows: np.ndarray, device: torch.device,
                 ram_fraction: float = 0.4) -> torch.Tensor | StreamedImages:
    """The training images on the device if they fit, in RAM if they fit, else streamed."""
    rows = np.sort(rows)
    nbytes = len(rows) * int(np.prod(images.shape[1:]))
    if nbytes > ram_fraction * physical_memory():
        return StreamedImages(images, rows)
    host = torch.from_numpy(np.ascontiguousarray(images[rows]))
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return host.to(device) if nbytes < 0.5 * free else host.pin_memory()
    return host.to(device)


@dataclass
class BatchPipeline:
    """Turns uint8 indices into model-ready float batches on the device."""

    images: torch.Tensor | StreamedImages  # uint8 (N, C, S, S): device, pinned host, or streamed
    labels: torch.Tensor  # int64 (N,), on the device
    mean: torch.Tensor  # (1, C, 1, 1) on the device
    std: torch.Tensor
    device: torch.device
    augment: BatchAugment | None = None
    lesions: LesionSynthesis | None = None  # paints lesions into some normal images (relabelled)
    size_at: Callable[[float], int] | None = None  # progressive resizing: input side at a progress
    mirror_channel: bool = False  # the third channel is the first mirrored (transforms.Preprocess)

    def batch(self, index: torch.Tensor, progress: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.images[index.to(self.images.device)]
        if self.device.type == "cuda" and not x.is_cuda:
            x = x.pin_memory()
        x = x.to(self.device, non_blocking=True)
        x = x.float().div_(255.0)
        y = self.labels[index.to(self.labels.device)]
        if self.lesions is not None:
            x, y = self.lesions(x, y)
        if self.mirror_channel:  # drawn again after the lesions, so that a lesion has no mirror twin
            x = torch.cat([x[:, :2], x[:, :1].flip(-1)], dim=1)
        if self.augment is not None:
            x = self.augment(x)
        size = x.shape[-1] if self.size_at is None else self.size_at(progress)
        if size < x.shape[-1]:
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        x = (x - self.mean) / self.std
        if uses_channels_last(self.device):
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y


def train_one_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, criterion: nn.Module,
                    pipeline: BatchPipeline, order: torch.Tensor, *, batch_size: int,
                    budget: Budget, set_lr: Callable[[float], float],
                    on_batch: Callable[[int, str], None] = lambda n, status: None,
                    after_step: Callable[[], None] | None = None) -> dict:
    """One pass over `order`; returns mean loss, accuracy, images and seconds. `after_step` runs
    after each optimizer step (the weight average's update)."""
    model.train()
    device = pipeline.device
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device)
    seen, started = 0, time.perf_counter()
    for step, start in enumerate(range(0, len(order), batch_size)):
        index = order[start:start + batch_size]
        if len(index) < 2 or budget.exhausted:
            break
        step_began = time.perf_counter()
        progress = budget.progress
        lr = set_lr(progress)
        x, y = pipeline.batch(index, progress)
        with autocast_for(device):
            logits = model(x)
            loss = criterion(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if after_step is not None:
            after_step()
        budget.step += 1
        budget.step_seconds = time.perf_counter() - step_began
        loss_sum += loss.detach() * len(index)
        correct += (logits.detach().argmax(1) == y).sum()
        seen += len(index)
        if step % 10 == 0:
            on_batch(len(index), f"loss {loss_sum.item() / seen:.3f} lr {lr:.2e}")
        else:
            on_batch(len(index), "")
    seconds = time.perf_counter() - started
    return {"train_loss": loss_sum.item() / max(1, seen), "train_acc": correct.item() / max(1, seen),
            "images": seen, "seconds": seconds}
