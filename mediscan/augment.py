"""Batched, seeded augmentation on the training device: one affine warp and a few photometric ops per batch."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges of the random transforms; zero or (1, 1) switches a transform off."""

    rotate: float = 0.0  # max degrees
    scale: tuple[float, float] = (1.0, 1.0)  # zoom range (<1 zooms out: wider margins)
    aspect: tuple[float, float] = (1.0, 1.0)  # x/y stretch range
    shear: float = 0.0  # max degrees
    translate: float = 0.0  # max fraction of the side
    hflip: float = 0.0  # probability
    vflip: float = 0.0  # probability
    fill: str = "zeros"  # grid_sample padding mode: zeros | border (Keras' "nearest")
    gamma: tuple[float, float] = (1.0, 1.0)
    contrast: tuple[float, float] = (1.0, 1.0)
    brightness: float = 0.0  # max additive shift
    bias_field: float = 0.0  # max log-amplitude of a smooth multiplicative field
    blur: float = 0.0  # max Gaussian sigma in pixels
    noise: float = 0.0  # max Rician noise std (image range 0..1)
    downsample: float = 1.0  # smallest resolution factor
    p_photometric: float = 0.5  # probability of each photometric op per sample
    skull_strip: float = 0.0  # probability of keeping only an eroded head mask (brain extraction)
    strip_depth: tuple[float, float] = (0.03, 0.10)  # erosion, as a fraction of the image side
    intensity_curve: float = 0.0  # probability of a random (non-monotonic) curve on the foreground
    invert: float = 0.0  # probability that the curve inverts the foreground (T1 <-> T2-like)
    curve_knots: int = 6  # control points of the random intensity curve


PRESETS: dict[str, AugmentConfig] = {
    "none": AugmentConfig(),
    "rotate-flip": AugmentConfig(rotate=30, hflip=0.5),
    "flips-rotations": AugmentConfig(rotate=15, hflip=0.5, vflip=0.5),
    "keras-tumor": AugmentConfig(shear=0.2, scale=(0.7, 1.3), translate=0.2, fill="border"),
    "keras-malaria": AugmentConfig(
        rotate=20, scale=(0.95, 1.05), translate=0.05, shear=0.05, hflip=0.5, fill="border"
    ),
    # mild geometry and contrast, nothing that removes detail (no blur, noise or downsampling):
    # tiny images already at their resolution limit (MedMNIST's 28 px, cell crops), and the demo
    "light": AugmentConfig(
        rotate=15, scale=(0.9, 1.1), translate=0.05, hflip=0.5, gamma=(0.8, 1.25),
        contrast=(0.85, 1.15), p_photometric=0.3,
    ),
    "strong": AugmentConfig(
        rotate=20, scale=(0.75, 1.15), aspect=(0.85, 1.18), shear=8, translate=0.1, hflip=0.5,
        gamma=(0.6, 1.6), contrast=(0.7, 1.3), brightness=0.08, bias_field=0.4, blur=1.2,
        noise=0.05, downsample=0.4, p_photometric=0.35,
    ),
}
PRESETS["demo"] = PRESETS["light"]
# MRI of any site: the strong preset plus brain-extraction-like masking, so that the skull cannot stand in
# for a label. "mri-contrast" adds random intensity curves (T1 <-> T2-like remappings) for a training set of
# one weighting that must read others; on a set with every weighting they cost accuracy (README, ablation).
PRESETS["mri"] = replace(PRESETS["strong"], scale=(0.75, 1.3), skull_strip=0.4)
PRESETS["mri-contrast"] = replace(PRESETS["mri"], intensity_curve=0.6, invert=0.25)


def get_preset(name: str) -> AugmentConfig:
    """A named augmentation preset; the error lists the valid names."""
    if name not in PRESETS:
        raise ValueError(f"unknown augmentation preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return PRESETS[name]


def filled_head(batch: torch.Tensor, level: float = 0.02) -> torch.Tensor:
    """(N, 1, H, W) 0/1 mask of the head: pixels between the first and last bright pixel of
    both their row and their column, so dark ventricles and CSF inside the head count too."""
    bright = (batch.amax(dim=1, keepdim=True) > level).to(torch.uint8)

    def between(dim: int) -> torch.Tensor:
        after_first = bright.cummax(dim=dim).values
        before_last = bright.flip(dim).cummax(dim=dim).values.flip(dim)
        return after_first & before_last

    return (between(2) & between(3)).to(batch.dtype)


def eroded(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """A 0/1 mask (N, 1, H, W) shrunk by `radius` pixels (a square structuring element, applied
    as a row and a column pass: 2k instead of k*k comparisons per pixel)."""
    size = 2 * radius + 1
    outside = F.max_pool2d(1 - mask, (1, size), stride=1, padding=(0, radius))
    return 1 - F.max_pool2d(outside, (size, 1), stride=1, padding=(radius, 0))


def reframe(batch: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Zoom each image so that its mask's bounding box fills the frame, aspect kept (centred)."""
    n, _, h, w = batch.shape
    rows, cols = mask.any(dim=3).squeeze(1), mask.any(dim=2).squeeze(1)  # (N, H), (N, W)
    empty = ~rows.any(dim=1)

    def extent(hits: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        coords = torch.linspace(-1, 1, size, device=batch.device, dtype=batch.dtype)
        low = torch.where(hits, coords, torch.full_like(coords, 2.0)).amin(dim=1)
        high = torch.where(hits, coords, torch.full_like(coords, -2.0)).amax(dim=1)
        return (low + high) / 2, (high - low) / 2

    cy, half_h = extent(rows, h)
    cx, half_w = extent(cols, w)
    half = torch.maximum(half_h, half_w).clamp(min=0.25)  # never zoom in more than 4x
    half = torch.where(empty, torch.ones_like(half), half)
    theta = torch.zeros(n, 2, 3, device=batch.device, dtype=batch.dtype)
    theta[:, 0, 0] = theta[:, 1, 1] = half
    theta[:, 0, 2] = torch.where(empty, torch.zeros_like(cx), cx)
    theta[:, 1, 2] = torch.where(empty, torch.zeros_like(cy), cy)
    grid = F.affine_grid(theta, list(batch.shape), align_corners=True)
    return F.grid_sample(batch, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


class BatchAugment:
    """Random per-sample transforms applied to a whole float batch (N, C, H, W, range 0..1) at once."""

    def __init__(self, config: AugmentConfig | str, seed: int = 0) -> None:
        self.config = get_preset(config) if isinstance(config, str) else config
        self.generator = torch.Generator().manual_seed(seed)

    def _uniform(self, n: int, low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, generator=self.generator)

    def _chance(self, n: int, p: float) -> torch.Tensor:
        return torch.rand(n, generator=self.generator) < p

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        if batch.shape[1] > 1 and bool((batch == batch[:, :1]).all()):  # grey: augment one channel
            return self(batch[:, :1]).expand_as(batch).contiguous()
        batch = self._affine(batch)
        for op in (self._skull_strip, self._intensity_curve, self._bias_field, self._gamma_contrast,
                   self._blur, self._downsample, self._noise):
            batch = op(batch)
        return batch.clamp_(0.0, 1.0)

    def _affine_matrices(self, n: int) -> torch.Tensor:
        """Inverse sampling matrices (N, 2, 3) for affine_grid in normalised coordinates."""
        c = self.config
        angle = torch.deg2rad(self._uniform(n, -c.rotate, c.rotate))
        shear = torch.deg2rad(self._uniform(n, -c.shear, c.shear))
        zoom = torch.exp(self._uniform(n, math.log(c.scale[0]), math.log(c.scale[1])))
        aspect = torch.exp(self._uniform(n, math.log(c.aspect[0]), math.log(c.aspect[1])))
        sx = torch.where(self._chance(n, c.hflip), -1.0, 1.0) / (zoom * aspect.sqrt())
        sy = torch.where(self._chance(n, c.vflip), -1.0, 1.0) / (zoom / aspect.sqrt())
        cos, sin = torch.cos(angle), torch.sin(angle)
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0] = cos * sx
        theta[:, 0, 1] = (-sin + torch.tan(shear) * cos) * sy
        theta[:, 1, 0] = sin * sx
        theta[:, 1, 1] = cos * sy
        theta[:, :, 2] = self._uniform(2 * n, -2 * c.translate, 2 * c.translate).view(n, 2)
        return theta

    def _affine(self, batch: torch.Tensor) -> torch.Tensor:
        c = self.config
        if not (c.rotate or c.shear or c.translate or c.hflip or c.vflip or c.scale != (1, 1)
                or c.aspect != (1, 1)):
            return batch
        theta = self._affine_matrices(batch.shape[0]).to(batch.device, batch.dtype)
        grid = F.affine_grid(theta, list(batch.shape), align_corners=False)
        return F.grid_sample(batch, grid, mode="bilinear", padding_mode=c.fill, align_corners=False)

    def _per_sample(self, values: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        return values.to(batch.device, batch.dtype).view(-1, 1, 1, 1)

    def _on_some(self, batch: torch.Tensor, p: float, op: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """`op` applied to the samples drawn with probability `p`; only those are computed."""
        chosen = self._chance(batch.shape[0], p).nonzero().squeeze(1).to(batch.device)
        if len(chosen) == 0:
            return batch
        return batch.index_copy(0, chosen, op(batch.index_select(0, chosen)))

    def _skull_strip(self, batch: torch.Tensor) -> torch.Tensor:
        """Brain extraction: keep an eroded copy of the head mask (scalp and skull go), then
        re-frame the brain to fill the image, as preprocessing frames a skull-stripped scan."""
        c = self.config
        if not c.skull_strip:
            return batch
        depth = float(self._uniform(1, *c.strip_depth))
        radius = max(1, round(depth * batch.shape[-1]))

        def strip(images: torch.Tensor) -> torch.Tensor:
            brain = F.avg_pool2d(eroded(filled_head(images), radius), 3, stride=1, padding=1)  # soft edge
            return reframe(images * brain, brain > 0.5)

        return self._on_some(batch, c.skull_strip, strip)

    def _curves(self, n: int) -> torch.Tensor:
        """(N, K) random intensity curves through (0, 0): half monotonic, some inverted."""
        c = self.config
        knots = torch.rand(n, c.curve_knots, generator=self.generator) * 0.9 + 0.1
        monotonic = self._chance(n, 0.5).view(-1, 1)
        knots = torch.where(monotonic, knots.sort(dim=1).values, knots)
        inverted = self._chance(n, c.invert).view(-1, 1)
        knots = torch.where(inverted, knots.sort(dim=1, descending=True).values, knots)
        return torch.cat([torch.zeros(n, 1), knots], dim=1)

    def _intensity_curve(self, batch: torch.Tensor) -> torch.Tensor:
        """Map each image's intensities through its own random piecewise-linear curve, 0 kept at 0.

        Tissue contrast is what tells MRI weightings apart; a random curve per image (the
        SynthSeg idea) makes it useless as a label cue, while shapes and edges survive."""
        c = self.config
        if not c.intensity_curve:
            return batch

        def remap(images: torch.Tensor) -> torch.Tensor:
            n = images.shape[0]
            curves = self._curves(n).to(images.device, images.dtype)
            segments = curves.shape[1] - 1
            position = images.clamp(0, 1).reshape(n, -1) * segments
            low = position.floor().clamp(max=segments - 1)
            frac = position - low
            low = low.long()
            return (curves.gather(1, low) * (1 - frac) + curves.gather(1, low + 1) * frac).view_as(images)

        return self._on_some(batch, c.intensity_curve, remap)

    def _gamma_contrast(self, batch: torch.Tensor) -> torch.Tensor:
        c = self.config
        n = batch.shape[0]
        if c.gamma == (1, 1) and c.contrast == (1, 1) and not c.brightness:
            return batch
        gamma = torch.exp(self._uniform(n, math.log(c.gamma[0]), math.log(c.gamma[1])))
        gamma = torch.where(self._chance(n, c.p_photometric), gamma, 1.0)
        contrast = torch.where(self._chance(n, c.p_photometric),
                               self._uniform(n, *c.contrast), 1.0)
        shift = torch.where(self._chance(n, c.p_photometric),
                            self._uniform(n, -c.brightness, c.brightness), 0.0)
        out = batch.clamp(min=0).pow(self._per_sample(gamma, batch))
        mean = out.mean(dim=(1, 2, 3), keepdim=True)
        return (out - mean) * self._per_sample(contrast, batch) + mean + self._per_sample(shift, batch)

    def _bias_field(self, batch: torch.Tensor) -> torch.Tensor:
        """Smooth multiplicative field exp(quadratic polynomial), as MRI coil inhomogeneity."""
        if not self.config.bias_field:
            return batch
        n, _, h, w = batch.shape
        amp = self.config.bias_field
        coeffs = self._uniform(6 * n, -amp, amp).view(n, 6)
        coeffs[~self._chance(n, self.config.p_photometric)] = 0.0
        y, x = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
        basis = torch.stack([torch.ones_like(x), x, y, x * y, x * x, y * y])  # (6, H, W)
        log_field = torch.einsum("nk,khw->nhw", coeffs, basis).unsqueeze(1)
        return batch * log_field.exp().to(batch.device, batch.dtype)

    def _blur(self, batch: torch.Tensor) -> torch.Tensor:
        if not self.config.blur:
            return batch
        sigma = float(self._uniform(1, 0.3, self.config.blur))
        radius = max(1, math.ceil(2 * sigma))
        offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
        kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
        kernel = (kernel / kernel.sum()).to(batch.device, batch.dtype)
        channels = batch.shape[1]

        def blur(images: torch.Tensor) -> torch.Tensor:
            pad = F.pad(images, (radius, radius, radius, radius), mode="replicate")
            out = F.conv2d(pad, kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), groups=channels)
            return F.conv2d(out, kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), groups=channels)

        return self._on_some(batch, self.config.p_photometric, blur)

    def _downsample(self, batch: torch.Tensor) -> torch.Tensor:
        """Lose resolution: shrink and enlarge again (a low-field or thumbnail image)."""
        if self.config.downsample >= 1:
            return batch
        factor = float(self._uniform(1, self.config.downsample, 1.0))
        h, w = batch.shape[-2:]

        def downsample(images: torch.Tensor) -> torch.Tensor:
            small = F.interpolate(images, size=(max(8, int(h * factor)), max(8, int(w * factor))),
                                  mode="bilinear", antialias=True, align_corners=False)
            return F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)

        return self._on_some(batch, self.config.p_photometric, downsample)

    def _noise(self, batch: torch.Tensor) -> torch.Tensor:
        """Rician noise: magnitude of the image plus complex Gaussian noise."""
        if not self.config.noise:
            return batch

        def rician(images: torch.Tensor) -> torch.Tensor:
            std = self._per_sample(self._uniform(images.shape[0], 0.0, self.config.noise), images)
            seed = int(torch.randint(0, 2**62, (1,), generator=self.generator))
            noise_gen = torch.Generator(device=images.device).manual_seed(seed)
            real = torch.randn(images.shape, generator=noise_gen, device=images.device, dtype=images.dtype)
            imag = torch.randn(images.shape, generator=noise_gen, device=images.device, dtype=images.dtype)
            return torch.sqrt((images + std * real) ** 2 + (std * imag) ** 2)

        return self._on_some(batch, self.config.p_photometric, rician)
