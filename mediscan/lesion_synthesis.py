"""Synthetic lesions painted into normal brain slices during training, relabelled as a tumour.

In the brain-tumour Training folder the no-tumour images come from other sources than the
tumour images (other scanners, weightings, framing, texture), so "which source" predicts the
label and a network learns the source instead of the lesion. Painting a random lesion into some
normal images and calling them a tumour gives the tumour class the normal images' source too:
the only thing left that tells the classes apart is the lesion itself. The idea follows
lesion-synthesis training (Hu et al., "Label-free liver tumor segmentation", CVPR 2023) and
SynthSeg's random contrasts: shape, rim, necrotic core and oedema halo are drawn at random,
and each part's intensity is random, brighter or darker than the brain around it, so no MRI
weighting is preferred.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mediscan.augment import eroded, filled_head

NORMAL_NAMES = ("notumor", "no_tumor", "no tumor", "no-tumor", "no", "normal", "healthy")
LESION_NAMES = ("glioma",)


def lesion_classes(classes: list[str]) -> tuple[int, int] | None:
    """(normal class, class a synthetic lesion is labelled) for a brain-tumour label set, else None.

    The normal class is named like "notumor"/"no"/"normal"; with two classes the other one is the
    lesion class, with more a class named "glioma" (an intra-axial mass, what is painted)."""
    lowered = [c.lower() for c in classes]
    normal = next((i for i, c in enumerate(lowered) if c in NORMAL_NAMES), None)
    if normal is None:
        return None
    if len(classes) == 2:
        return normal, 1 - normal
    lesion = next((i for i, c in enumerate(lowered) if c in LESION_NAMES), None)
    return None if lesion is None else (normal, lesion)


@dataclass(frozen=True)
class LesionConfig:
    """Ranges of the random lesion; sizes are fractions of the image side."""

    probability: float = 0.35  # share of normal images that get a lesion
    radius: tuple[float, float] = (0.05, 0.2)
    wobble: float = 0.1  # irregularity of the outline (amplitude of each angular harmonic)
    core: tuple[float, float] = (0.0, 0.7)  # necrotic core radius, fraction of the lesion's
    halo: tuple[float, float] = (1.0, 2.2)  # oedema radius, multiple of the lesion's
    contrast: tuple[float, float] = (0.15, 0.6)  # |lesion - brain| intensity difference
    inset: float = 0.08  # keep the centre this far inside the head outline (skull and scalp)


def _soft_inside(rho: torch.Tensor, edge, width: float) -> torch.Tensor:
    """1 inside the normalised radius `edge`, 0 outside, with a sigmoid edge `width` wide."""
    return torch.sigmoid((edge - rho) / width)


class LesionSynthesis:
    """Paints random lesions into a share of the normal images of a batch and relabels them."""

    def __init__(self, normal: int, lesion: int, config: LesionConfig = LesionConfig(),
                 seed: int = 0) -> None:
        self.normal, self.lesion, self.config = normal, lesion, config
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, batch: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, C, H, W) floats in 0..1 and (N,) labels -> the batch with lesions, new labels."""
        chosen = (labels.cpu() == self.normal) & (
            torch.rand(len(labels), generator=self.generator) < self.config.probability)
        if not chosen.any():
            return batch, labels
        index = chosen.nonzero().squeeze(1).to(batch.device)
        batch = batch.clone()
        batch[index] = self.paint(batch[index])
        labels = labels.clone()
        labels[index] = self.lesion
        return batch, labels

    def _uniform(self, n: int, bounds: tuple[float, float], device) -> torch.Tensor:
        low, high = bounds
        return (low + (high - low) * torch.rand(n, generator=self.generator)).to(device)

    def _centres(self, brain: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A random pixel inside each image's brain mask (anywhere in the image when it is empty)."""
        n, _, h, w = brain.shape
        weights = brain.flatten(1).float().cpu() + 1e-6
        flat = torch.multinomial(weights, 1, generator=self.generator).squeeze(1).to(brain.device)
        return (flat // w).float(), (flat % w).float()

    def _radius_field(self, shape, cy, cx, radius) -> torch.Tensor:
        """Distance to the centre divided by an irregular outline's radius: < 1 inside."""
        n, _, h, w = shape
        device = cy.device
        yy = torch.arange(h, device=device, dtype=torch.float32).view(1, h, 1) - cy.view(n, 1, 1)
        xx = torch.arange(w, device=device, dtype=torch.float32).view(1, 1, w) - cx.view(n, 1, 1)
        angle = torch.atan2(yy, xx)
        outline = torch.ones_like(angle)
        for harmonic in range(2, 5):
            amplitude = self._uniform(n, (0.0, self.config.wobble), device).view(n, 1, 1)
            phase = self._uniform(n, (0.0, 2 * math.pi), device).view(n, 1, 1)
            outline = outline + amplitude * torch.cos(harmonic * angle + phase)
        return (torch.sqrt(yy**2 + xx**2) / (radius.view(n, 1, 1) * outline.clamp(min=0.3))).unsqueeze(1)

    def _intensity(self, base: torch.Tensor) -> torch.Tensor:
        """A level brighter or darker than `base` by a random contrast, kept in 0..1."""
        n = base.shape[0]
        step = self._uniform(n, self.config.contrast, base.device)
        sign = torch.where(torch.rand(n, generator=self.generator) < 0.5, -1.0, 1.0).to(base.device)
        level = base + sign * step
        flipped = base - sign * step  # no room on that side: go the other way
        level = torch.where((level < 0.02) | (level > 1.0), flipped, level)
        return level.clamp(0.02, 1.0).view(n, 1, 1, 1)

    def paint(self, images: torch.Tensor) -> torch.Tensor:
        """Each image with one lesion: solid part, optional necrotic core, oedema halo."""
        n, _, h, w = images.shape
        c, device = self.config, images.device
        head = filled_head(images)
        inset = max(1, round(c.inset * h))
        brain = eroded(head, inset)
        cy, cx = self._centres(brain)
        radius = self._uniform(n, c.radius, device) * h
        rho = self._radius_field(images.shape, cy, cx, radius)
        base = (images * brain).sum(dim=(1, 2, 3)) / (brain.sum(dim=(1, 2, 3)) * images.shape[1]).clamp(min=1)
        halo_edge = self._uniform(n, c.halo, device).view(n, 1, 1, 1)
        core_edge = self._uniform(n, c.core, device).view(n, 1, 1, 1)
        inside = eroded(head, inset // 2)
        halo = _soft_inside(rho, halo_edge, 0.2) * inside
        solid = _soft_inside(rho, 1.0, 0.06) * inside
        core = _soft_inside(rho, core_edge, 0.06) * (core_edge > 0.15)
        keep = self._uniform(n, (0.3, 0.7), device).view(n, 1, 1, 1)  # anatomy still seen through oedema
        out = images + halo * (1 - keep) * (self._intensity(base) - images)
        out = out + solid * (self._intensity(base) - out)
        out = out + core * (self._intensity(base) - out)
        coarse = torch.randn(n, 1, max(2, h // 8), max(2, w // 8), generator=self.generator).to(device)
        texture = 1 + 0.1 * F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)
        return torch.where(halo > 0.01, (out * texture).clamp(0, 1), images)
