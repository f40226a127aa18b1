"""A deterministic synthetic brain-MRI phantom: the embedded demo's data set.

Each axial slice has a scalp/skull ring, CSF, grey and white matter with texture, ventricles,
a random pose, size, contrast and Rician noise. Classes mirror the real task:

- glioma: an irregular intra-axial mass with a rim and an oedema halo, inside the parenchyma;
- meningioma: a round, homogeneous extra-axial mass against the inner table of the skull;
- pituitary: a small midline mass at the skull base (the sella);
- notumor: no mass.

Global gain and gamma vary per image far more than a mass changes the mean, so no class can
be told apart by overall brightness. `style="shifted"` renders a contrast (T2-like: bright
CSF) and framing (wide margins, non-square canvas, burned-in letter) never used in training.
`masses.json` records where each mass is, for checking that Grad-CAM looks there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

PHANTOM_CLASSES = ("glioma", "meningioma", "notumor", "pituitary")
STYLES = ("default", "shifted")


@dataclass(frozen=True)
class Contrast:
    """Tissue intensities (0..1) of one MRI weighting."""

    scalp: float
    csf: float
    grey: float
    white: float
    ventricle: float
    mass: float
    rim: float
    oedema: float


T1_LIKE = Contrast(scalp=0.75, csf=0.12, grey=0.45, white=0.62, ventricle=0.1, mass=0.8,
                   rim=0.9, oedema=0.33)
T2_LIKE = Contrast(scalp=0.35, csf=0.9, grey=0.55, white=0.36, ventricle=0.92, mass=0.62,
                   rim=0.7, oedema=0.8)


@dataclass(frozen=True)
class Head:
    """Pose of the head on the canvas: centre and semi-axes in pixels, rotation in radians."""

    cx: float
    cy: float
    a: float
    b: float
    angle: float

    def local(self, xx: np.ndarray, yy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Canvas pixels -> head coordinates (the head is the unit disc)."""
        dx, dy = xx - self.cx, yy - self.cy
        cos, sin = np.cos(self.angle), np.sin(self.angle)
        return (cos * dx + sin * dy) / self.a, (-sin * dx + cos * dy) / self.b

    def to_pixels(self, u: float, v: float) -> tuple[float, float]:
        """Head coordinates -> canvas pixel (x, y)."""
        cos, sin = np.cos(self.angle), np.sin(self.angle)
        x, y = u * self.a, v * self.b
        return self.cx + cos * x - sin * y, self.cy + sin * x + cos * y


def _head(rng: np.random.Generator, height: int, width: int, style: str) -> Head:
    side = min(height, width) / 2
    scale = rng.uniform(0.5, 0.7) if style == "shifted" else rng.uniform(0.74, 0.93)
    aspect = rng.uniform(0.8, 0.95)
    shift = 0.15 if style == "shifted" else 0.06
    return Head(cx=width / 2 + rng.uniform(-shift, shift) * side,
                cy=height / 2 + rng.uniform(-shift, shift) * side,
                a=scale * side * aspect, b=scale * side, angle=rng.uniform(-0.35, 0.35))


def _texture(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    noise = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    return noise / (noise.std() + 1e-8)


def _anatomy(u: np.ndarray, v: np.ndarray, rng: np.random.Generator, c: Contrast) -> np.ndarray:
    """Scalp/skull ring, CSF, grey and white matter with texture, and the ventricles."""
    r = np.hypot(u, v)
    image = np.zeros_like(u)
    image[r < 1.0] = c.scalp
    image[r < 0.9] = c.csf
    brain = r < 0.86
    wobble = 0.04 * _texture(rng, u.shape, 3)
    image[brain] = c.grey
    white = np.hypot(u / 0.78, v / 0.7) + wobble < 0.8
    image[white & brain] = c.white
    spread = rng.uniform(0.09, 0.15)
    for side in (-1, 1):
        vu = (u - side * spread) * np.cos(side * 0.35) - v * np.sin(side * 0.35)
        vv = (u - side * spread) * np.sin(side * 0.35) + v * np.cos(side * 0.35)
        image[np.hypot(vu / 0.06, (vv + 0.02) / rng.uniform(0.16, 0.24)) < 1] = c.ventricle
    image += brain * 0.04 * _texture(rng, u.shape, 1.2)
    return image


def _irregular_radius(angle: np.ndarray, base: float, rng: np.random.Generator) -> np.ndarray:
    wobble = sum(rng.uniform(0.06, 0.16) * np.sin(k * angle + rng.uniform(0, 6.3))
                 for k in (2, 3, 5))
    return base * (1 + wobble)


def _glioma(u, v, image, rng, c: Contrast) -> tuple[float, float, float]:
    radius = rng.uniform(0.12, 0.2)
    centre_r, theta = rng.uniform(0.2, 0.6 - radius / 2), rng.uniform(0, 2 * np.pi)
    mu, mv = centre_r * np.cos(theta), centre_r * np.sin(theta)
    d, angle = np.hypot(u - mu, v - mv), np.arctan2(v - mv, u - mu)
    edge = _irregular_radius(angle, radius, rng)
    image[(d < 1.7 * edge) & (np.hypot(u, v) < 0.86)] = c.oedema
    image[d < edge] = c.rim
    image[d < 0.65 * edge] = c.mass * rng.uniform(0.35, 0.8)  # necrotic core
    return mu, mv, 1.7 * radius


def _meningioma(u, v, image, rng, c: Contrast) -> tuple[float, float, float]:
    radius = rng.uniform(0.11, 0.18)
    theta = rng.uniform(0, 2 * np.pi)
    centre_r = 0.88 - 0.75 * radius
    mu, mv = centre_r * np.cos(theta), centre_r * np.sin(theta)
    image[(np.hypot(u - mu, v - mv) < radius) & (np.hypot(u, v) < 0.9)] = c.mass
    return mu, mv, radius


def _pituitary(u, v, image, rng, c: Contrast) -> tuple[float, float, float]:
    radius = rng.uniform(0.07, 0.11)
    mu, mv = rng.uniform(-0.03, 0.03), rng.uniform(0.52, 0.62)
    image[np.hypot((u - mu) / 1.2, v - mv) < radius] = c.mass
    return mu, mv, 1.2 * radius


MASSES = {"glioma": _glioma, "meningioma": _meningioma, "pituitary": _pituitary}


def _acquire(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random gain, gamma and Rician noise, as different scanners and protocols would give."""
    image = np.clip(image, 0, 1) ** rng.uniform(0.7, 1.45) * rng.uniform(0.55, 1.0)
    sigma = rng.uniform(0.015, 0.05)
    real = image + sigma * rng.standard_normal(image.shape)
    imag = sigma * rng.standard_normal(image.shape)
    return np.clip(np.hypot(real, imag) * 255, 0, 255).astype(np.uint8)


def _canvas(rng: np.random.Generator, size: int, style: str) -> tuple[int, int]:
    if style != "shifted":
        return size, size
    aspect = rng.uniform(0.7, 1.4)
    return (size, int(size * aspect)) if aspect > 1 else (int(size / aspect), size)


def _burn_letter(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    pil = Image.fromarray(image)
    letter = "ABCDabcd"[int(rng.integers(8))]
    ImageDraw.Draw(pil).text((3, 2), letter, fill=255)
    return np.asarray(pil)


def render(label: str, rng: np.random.Generator, *, size: int = 128,
           style: str = "default") -> tuple[np.ndarray, dict | None]:
    """One phantom slice (uint8 H x W) and its mass (pixel centre, radius, box) or None."""
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    height, width = _canvas(rng, size, style)
    head = _head(rng, height, width, style)
    yy, xx = np.mgrid[:height, :width].astype(np.float64)
    u, v = head.local(xx, yy)
    contrast = T2_LIKE if style == "shifted" else T1_LIKE
    image = _anatomy(u, v, rng, contrast)
    mass = None
    if label in MASSES:
        mu, mv, radius = MASSES[label](u, v, image, rng, contrast)
        x, y = head.to_pixels(mu, mv)
        r = radius * max(head.a, head.b)
        mass = {"x": round(x, 2), "y": round(y, 2), "radius": round(r, 2),
                "box": [round(x - r, 1), round(y - r, 1), round(x + r, 1), round(y + r, 1)]}
    image = _acquire(image, rng)
    if style == "shifted":
        image = _burn_letter(image, rng)
    return image, mass


def make_phantom(out_dir: str | Path, *, n: int = 2000, size: int = 128, seed: int = 0,
                 style: str = "default") -> Path:
    """Write n balanced phantom PNGs into class folders, plus masses.json; returns out_dir."""
    out_dir = Path(out_dir)
    rng = np.random.default_rng(seed)
    masses: dict[str, dict | None] = {}
    for k in range(n):
        label = PHANTOM_CLASSES[k % len(PHANTOM_CLASSES)]
        image, mass = render(label, np.random.default_rng(rng.integers(2**63)), size=size,
                             style=style)
        relative = f"{label}/{k:05d}.png"
        (out_dir / label).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(out_dir / relative, optimize=False)
        masses[relative] = mass
    (out_dir / "masses.json").write_text(json.dumps(masses, indent=0))
    return out_dir
