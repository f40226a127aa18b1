"""A deterministic synthetic brain-MRI phantom: the embedded demo's data set.

Each slice is painted layer by layer in head coordinates (the skull is the unit disc): scalp,
skull, CSF, a folded brain outline, grey and white matter with texture, butterfly-shaped
ventricles, the interhemispheric fissure, the sella with its normal gland, and a few small
vessels. The head gets a random pose (rotation, scale, translation, aspect) and the image a
random bias field, gain, offset, gamma and Rician noise. Classes mirror the real task:

- glioma: an irregular intra-axial mass with an enhancing (or not) rim, a necrotic core and an
  oedema halo, inside the parenchyma;
- meningioma: a round, homogeneous extra-axial mass against the inner table of the skull,
  with a thin CSF cleft between it and the brain;
- pituitary: an enlarged gland (adenoma) in the sella, a small midline mass at the skull base;
- notumor: no mass (but the same vessels and normal gland, so neither "a bright spot" nor
  "something at the sella" gives the class away).

Mass size and contrast vary a lot and the global gain/gamma far more than a mass moves the
mean, so no class can be told apart by overall brightness. `style="shifted"` renders a
contrast (T2-like: bright CSF) and framing (wide margins or a tight fit, non-square canvas,
burned-in letter) never used in training, for the shift benchmark.

`masses.json` maps each file ("glioma/00000.png") to its mass, for checking that Grad-CAM
looks there: centre `x`, `y`, half-extents `rx`, `ry`, `radius` (the larger), `box` [x0, y0,
x1, y1) in pixels, and `lesion_box`, everything the mass changed (oedema, CSF cleft); null
for notumor. A mass draws from its own random stream, so the same seed renders the same
slice for every label: `render(label, seed) - render("notumor", seed)` is exactly the lesion.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

PHANTOM_CLASSES = ("glioma", "meningioma", "notumor", "pituitary")
STYLES = ("default", "shifted")

INNER_TABLE = 0.885  # radius of the skull's inner surface, in head coordinates
BRAIN = 0.85  # mean radius of the brain surface
SELLA_V = 0.64  # the sella sits on the midline near the skull base (inferior, +v)


@dataclass(frozen=True)
class Contrast:
    """Tissue intensities (0..1) of one MRI weighting."""

    scalp: float
    bone: float
    csf: float
    grey: float
    white: float
    gland: float
    mass: float  # enhancing tumour
    necrosis: float
    oedema: float
    vessel: float


T1_LIKE = Contrast(scalp=0.8, bone=0.07, csf=0.1, grey=0.42, white=0.6, gland=0.5, mass=0.8,
                   necrosis=0.2, oedema=0.36, vessel=0.85)
T2_LIKE = Contrast(scalp=0.45, bone=0.05, csf=0.92, grey=0.55, white=0.36, gland=0.5, mass=0.7,
                   necrosis=0.88, oedema=0.8, vessel=0.08)


@dataclass(frozen=True)
class Head:
    """Pose of the head on the canvas: centre and semi-axes in pixels, rotation in radians."""

    cx: float
    cy: float
    a: float
    b: float
    angle: float

    def local(self, xx: np.ndarray, yy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Canvas pixels -> head coordinates (the skull is the unit disc, +v points down)."""
        dx, dy = xx - self.cx, yy - self.cy
        cos, sin = math.cos(self.angle), math.sin(self.angle)
        return (cos * dx + sin * dy) / self.a, (-sin * dx + cos * dy) / self.b

    def to_pixels(self, u: float, v: float) -> tuple[float, float]:
        """Head coordinates -> canvas pixel (x, y)."""
        cos, sin = np.cos(self.angle), np.sin(self.angle)
        x, y = u * self.a, v * self.b
        return self.cx + cos * x - sin * y, self.cy + sin * x + cos * y


@dataclass
class Slice:
    """The image being painted, its head coordinates and the random source."""

    u: np.ndarray
    v: np.ndarray
    image: np.ndarray
    c: Contrast
    rng: np.random.Generator  # for the anatomy; each mass has its own, so masses change nothing else
    r: np.ndarray = field(init=False)  # polar head coordinates
    angle: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.r = np.hypot(self.u, self.v)
        self.angle = np.arctan2(self.v, self.u)

    def disc(self, mu: float, mv: float, ru: float, rv: float | None = None) -> np.ndarray:
        """Pixels inside the ellipse centred at (mu, mv) with semi-axes (ru, rv)."""
        return ((self.u - mu) / ru) ** 2 + ((self.v - mv) / (rv or ru)) ** 2 < 1


def _harmonics(angle: np.ndarray, rng: np.random.Generator, orders: tuple[int, ...],
               amplitude: tuple[float, float]) -> np.ndarray:
    """A random sum of sines around a contour: the irregularity of a boundary."""
    return sum(rng.uniform(*amplitude) * np.sin(k * angle + rng.uniform(0, 2 * np.pi)) for k in orders)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Gaussian-smoothed white noise with unit standard deviation."""
    noise = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma, truncate=3)
    return noise / (noise.std() + 1e-8)


# ---- anatomy -------------------------------------------------------------------------------

def _scalp_and_skull(s: Slice) -> None:
    """Bright scalp fat, the dark bony skull, and CSF up to the brain surface."""
    r = s.r
    s.image[r < 1.0] = s.c.scalp
    s.image[r < s.rng.uniform(0.93, 0.96)] = s.c.bone
    s.image[r < INNER_TABLE] = s.c.csf


def _brain(s: Slice) -> np.ndarray:
    """Grey matter inside a folded (gyral) brain outline; returns the brain mask."""
    folds = _harmonics(s.angle, s.rng, (int(s.rng.integers(14, 22)),), (0.008, 0.016))
    squash = s.rng.uniform(-0.03, 0.03)
    brain = np.hypot(s.u * (1 + squash), s.v * (1 - squash)) < BRAIN + folds
    s.image[brain] = s.c.grey
    return brain


def _white_matter(s: Slice, brain: np.ndarray) -> None:
    """White matter: an irregular inner region a cortical ribbon's depth below the surface."""
    depth = 0.7 + _harmonics(s.angle, s.rng, (4, 6, 9), (0.015, 0.035))
    white = np.hypot(s.u / 0.95, s.v / 0.9) < depth
    s.image[white & brain] = s.c.white


def _ventricles(s: Slice) -> None:
    """Butterfly-shaped lateral ventricles (two crescents, ")("), and the third ventricle's slit."""
    size = s.rng.uniform(0.75, 1.3)
    tilt = s.rng.uniform(-0.15, 0.25)  # > 0: frontal horns spread apart like wings
    for side in (-1, 1):
        cos, sin = np.cos(side * tilt), np.sin(side * tilt)
        du, dv = s.u - side * 0.1 * size, s.v + 0.06
        pu, pv = cos * du - sin * dv, sin * du + cos * dv
        body = np.hypot(pu / (0.065 * size), pv / (0.24 * size)) < 1
        bite = np.hypot((pu - side * 0.065 * size) / (0.06 * size), pv / (0.16 * size)) < 1
        s.image[body & ~bite] = s.c.csf
    s.image[s.disc(0.0, 0.26 * size, 0.012, 0.06 * size)] = s.c.csf


def _fissure(s: Slice) -> None:
    """The interhemispheric fissure: a thin CSF line from the front of the brain inwards."""
    length = s.rng.uniform(0.25, 0.4)
    s.image[(np.abs(s.u) < 0.012) & (s.v < -BRAIN + length) & (s.v > -INNER_TABLE)] = s.c.csf


def _sella(s: Slice) -> tuple[float, float]:
    """The sella: a dark bony cup at the skull base holding a small normal gland."""
    mu, mv = s.rng.uniform(-0.02, 0.02), SELLA_V + s.rng.uniform(-0.03, 0.03)
    cup = s.disc(mu, mv + 0.02, 0.09, 0.075) & ~s.disc(mu, mv + 0.005, 0.065, 0.055) & (s.v > mv)
    s.image[cup] = s.c.bone
    s.image[s.disc(mu, mv + 0.02, s.rng.uniform(0.035, 0.05), 0.028)] = s.c.gland
    return mu, mv


def _vessels(s: Slice, brain: np.ndarray) -> None:
    """A few small flow voids/enhancing vessels in every class: local contrast is not a mass."""
    for _ in range(int(s.rng.integers(2, 7))):
        radius, angle = s.rng.uniform(0.1, 0.75), s.rng.uniform(0, 2 * np.pi)
        dot = s.disc(radius * np.cos(angle), radius * np.sin(angle), s.rng.uniform(0.012, 0.03))
        s.image[dot & brain] = s.c.vessel if s.rng.random() < 0.7 else s.c.csf


def _parenchyma_texture(s: Slice, brain: np.ndarray) -> None:
    """Grey/white matter texture: smoothed noise at two scales, inside the brain only."""
    shape = s.image.shape
    texture = 0.035 * _smooth_noise(s.rng, shape, 3.0) + 0.02 * _smooth_noise(s.rng, shape, 1.0)
    s.image += brain * texture * s.rng.uniform(0.6, 1.4)


# ---- masses --------------------------------------------------------------------------------

def _mix(a: float, b: float, t: float) -> float:
    """From intensity a (t = 0) towards b (t = 1)."""
    return a + (b - a) * t


def _glioma(s: Slice, rng: np.random.Generator, brain: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Irregular intra-axial mass: rim (enhancing or not), necrotic core, oedema halo."""
    radius = rng.uniform(0.1, 0.19)
    centre, theta = rng.uniform(0.12, 0.62 - radius), rng.uniform(0, 2 * np.pi)
    mu, mv = centre * np.cos(theta), centre * np.sin(theta)
    d, angle = np.hypot(s.u - mu, s.v - mv), np.arctan2(s.v - mv, s.u - mu)
    edge = radius * (1 + _harmonics(angle, rng, (2, 3, 5), (0.05, 0.14)))
    halo = edge * (rng.uniform(1.35, 1.9) + _harmonics(angle, rng, (3, 4, 7), (0.05, 0.15)))
    strength = rng.uniform(0.6, 1.0)
    lesion = ((d < halo) & brain) | (d < edge)
    s.image[lesion] = _mix(s.c.white, s.c.oedema, strength)
    tumour = d < edge
    rim = s.c.mass if rng.random() < 0.85 else s.c.necrosis  # enhancing, or a darker rim
    s.image[tumour] = _mix(s.c.white, rim, strength * rng.uniform(0.5, 1.0))
    s.image[d < edge * rng.uniform(0.45, 0.75)] = _mix(s.c.white, s.c.necrosis, strength)
    s.image[lesion] += 0.04 * _smooth_noise(rng, s.image.shape, 1.2)[lesion]  # heterogeneous
    return tumour, lesion


def _meningioma(s: Slice, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Round homogeneous extra-axial mass against the inner table, with a CSF cleft."""
    radius = rng.uniform(0.09, 0.17)
    theta = rng.uniform(-np.pi, np.pi)
    while abs(theta - np.pi / 2) < 0.5:  # not at the skull base, where the sella is
        theta = rng.uniform(-np.pi, np.pi)
    centre = INNER_TABLE - rng.uniform(0.55, 0.85) * radius
    mu, mv = centre * np.cos(theta), centre * np.sin(theta)
    d = np.hypot(s.u - mu, s.v - mv)
    inside_skull = s.r < INNER_TABLE
    lesion = (d < radius + 0.02) & inside_skull
    s.image[lesion] = s.c.csf
    mass = (d < radius) & inside_skull
    s.image[mass] = _mix(s.c.grey, s.c.mass, rng.uniform(0.45, 1.0))
    return mass, lesion


def _pituitary(s: Slice, rng: np.random.Generator, sella: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Pituitary adenoma: an enlarged gland filling the sella and bulging upwards."""
    radius = rng.uniform(0.085, 0.13)
    mu, mv = sella[0], sella[1] + 0.04 - radius
    mass = s.disc(mu, mv, radius * rng.uniform(1.0, 1.25), radius)
    s.image[mass] = _mix(s.c.gland, s.c.mass, rng.uniform(0.55, 1.0))
    return mass, mass


def _paint_mass(s: Slice, label: str, rng: np.random.Generator, brain: np.ndarray,
                sella: tuple[float, float]) -> dict | None:
    """Paint the class's mass (if any); its description for masses.json, or None."""
    if label == "glioma":
        mass, lesion = _glioma(s, rng, brain)
    elif label == "meningioma":
        mass, lesion = _meningioma(s, rng)
    elif label == "pituitary":
        mass, lesion = _pituitary(s, rng, sella)
    else:
        return None
    return _describe(mass, lesion)


def _box(mask: np.ndarray) -> list[int]:
    """[x0, y0, x1, y1] (x1, y1 exclusive) of a mask's pixels, in pixels."""
    rows, cols = ndimage.find_objects(mask.astype(np.uint8))[0]
    return [cols.start, rows.start, cols.stop, rows.stop]


def _describe(mass: np.ndarray, lesion: np.ndarray) -> dict | None:
    """Centre, radii and bounding box of the mass, and the box of everything it changed."""
    if not mass.any():
        return None
    rows, cols = np.nonzero(mass)
    x0, y0, x1, y1 = _box(mass)
    return {"x": round(float(cols.mean()) + 0.5, 2), "y": round(float(rows.mean()) + 0.5, 2),
            "rx": (x1 - x0) / 2, "ry": (y1 - y0) / 2, "radius": max(x1 - x0, y1 - y0) / 2,
            "box": [x0, y0, x1, y1], "lesion_box": _box(lesion | mass)}


# ---- acquisition and framing ---------------------------------------------------------------

def _acquire(s: Slice) -> np.ndarray:
    """Bias field, gamma, gain, offset and Rician noise, as scanners and protocols differ."""
    tilt = s.rng.uniform(-0.15, 0.15, size=2)
    bias = 1 + tilt[0] * np.clip(s.u, -1, 1) + tilt[1] * np.clip(s.v, -1, 1)
    image = np.clip(s.image * bias, 0, 1) ** s.rng.uniform(0.7, 1.45)
    image = image * s.rng.uniform(0.5, 1.0) + s.rng.uniform(0.0, 0.04)
    sigma = s.rng.uniform(0.012, 0.04)
    real = image + sigma * s.rng.standard_normal(image.shape, dtype=np.float32)
    imag = sigma * s.rng.standard_normal(image.shape, dtype=np.float32)
    return np.clip(np.hypot(real, imag) * 255 + 0.5, 0, 255).astype(np.uint8)


def _canvas(rng: np.random.Generator, size: int, style: str) -> tuple[int, int]:
    """(height, width): square by default, aspect 0.7-1.4 when shifted."""
    if style != "shifted":
        return size, size
    aspect = rng.uniform(0.7, 1.4)  # width / height
    return (size, round(size * aspect)) if aspect > 1 else (round(size / aspect), size)


def _pose(rng: np.random.Generator, height: int, width: int, style: str) -> Head:
    """Random rotation, scale, aspect and translation; the head stays on the canvas."""
    side = min(height, width) / 2
    scale = rng.uniform(0.45, 0.98) if style == "shifted" else rng.uniform(0.74, 0.93)
    aspect = rng.uniform(0.8, 0.95)
    room_x = max(0.0, width / 2 - scale * side * aspect) * (0.8 if style == "shifted" else 0.4)
    room_y = max(0.0, height / 2 - scale * side) * (0.8 if style == "shifted" else 0.4)
    return Head(cx=width / 2 + rng.uniform(-room_x, room_x), cy=height / 2 + rng.uniform(-room_y, room_y),
                a=scale * side * aspect, b=scale * side, angle=rng.uniform(-0.35, 0.35))


def _burn_letter(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A figure letter ("a", "C", ...) burned into a corner, as in published figures."""
    pil = Image.fromarray(image)
    height, width = image.shape
    px = max(8, int(min(height, width) * rng.uniform(0.08, 0.16)))
    try:
        font = ImageFont.load_default(size=px)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        font = ImageFont.load_default()
    x = 2 if rng.random() < 0.5 else width - px - 2
    y = 1 if rng.random() < 0.7 else height - px - 4
    ImageDraw.Draw(pil).text((x, y), "abcdABCD"[int(rng.integers(8))], fill=int(rng.integers(200, 256)),
                             font=font)
    return np.asarray(pil)


def render(label: str, rng: np.random.Generator, *, size: int = 128,
           style: str = "default") -> tuple[np.ndarray, dict | None]:
    """One phantom slice (uint8 H x W) and its mass (pixel centre, radii, box) or None."""
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    if label not in PHANTOM_CLASSES:
        raise ValueError(f"label must be one of {PHANTOM_CLASSES}, got {label!r}")
    mass_rng = np.random.default_rng(rng.integers(2**63))  # the rest of the slice is the same for every label
    height, width = _canvas(rng, size, style)
    head = _pose(rng, height, width, style)
    yy, xx = np.mgrid[:height, :width].astype(np.float32) + np.float32(0.5)
    u, v = head.local(xx, yy)
    s = Slice(u, v, np.zeros((height, width), dtype=np.float32), T2_LIKE if style == "shifted" else T1_LIKE, rng)
    _scalp_and_skull(s)
    brain = _brain(s)
    _white_matter(s, brain)
    _ventricles(s)
    _fissure(s)
    sella = _sella(s)
    _vessels(s, brain)
    _parenchyma_texture(s, brain)
    mass = _paint_mass(s, label, mass_rng, brain, sella)
    image = _acquire(s)
    if style == "shifted":
        image = _burn_letter(image, rng)
    return image, mass


def make_phantom(out_dir: str | Path, *, n: int = 2000, size: int = 128, seed: int = 0,
                 style: str = "default") -> Path:
    """Write n balanced phantom PNGs into class folders, plus masses.json; returns out_dir."""
    out_dir = Path(out_dir)
    rng = np.random.default_rng(seed)
    for label in PHANTOM_CLASSES:
        (out_dir / label).mkdir(parents=True, exist_ok=True)
    masses: dict[str, dict | None] = {}
    for k in range(n):
        label = PHANTOM_CLASSES[k % len(PHANTOM_CLASSES)]
        image, mass = render(label, np.random.default_rng(rng.integers(2**63)), size=size, style=style)
        relative = f"{label}/{k:05d}.png"
        Image.fromarray(image).save(out_dir / relative, compress_level=1)
        masses[relative] = mass
    (out_dir / "masses.json").write_text(json.dumps(masses, indent=0))
    return out_dir
