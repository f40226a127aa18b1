"""Image corruptions at five severities, for measuring how accuracy degrades off-distribution.

`corrupt(images, name, severity, seed=0)` takes uint8 N x C x H x W (numpy or torch, the
preprocessed model input) and returns the same type, shape and dtype. Severity 0 is the
identity; 1..5 use the parameters below (intensities on a 0..1 scale, i.e. x / 255).
Random corruptions draw from `numpy.random.default_rng(seed)`, so equal seeds give equal
images, and the same noise pattern is scaled across severities. Grey images stored as three
equal channels are corrupted once and copied, so they stay grey.

| name           | parameter (severity 1..5)             | implementation                         |
|----------------|---------------------------------------|----------------------------------------|
| gaussian_noise | std 0.02, 0.04, 0.06, 0.09, 0.12      | additive N(0, std)                     |
| rician_noise   | std 0.02, 0.04, 0.06, 0.09, 0.12      | monai RandRicianNoise (MRI magnitude)  |
| blur           | sigma px 0.5, 1, 1.5, 2, 3            | scipy.ndimage.gaussian_filter, nearest |
| motion_ghosting| ghost intensity .2, .35, .5, .65, .8  | k-space: every 4th phase line scaled   |
| gibbs_ringing  | alpha 0.4, 0.5, 0.6, 0.7, 0.8         | monai GibbsNoise (k-space truncation)  |
| contrast       | factor 0.7, 0.55, 0.4, 0.3, 0.2       | mean + (x - mean) * factor             |
| gamma          | gamma 1.25, 1.5, 1.8, 2.2, 2.7        | x ** gamma (monai AdjustContrast)      |
| brightness     | offset 0.05, 0.1, 0.15, 0.2, 0.3      | x + offset                             |
| jpeg           | quality 60, 40, 25, 15, 8             | PIL JPEG round trip                    |
| downsample     | factor 1.5, 2, 3, 4, 6                | area down, bilinear up (torch)         |
| bias_field     | max coefficient 0.1, .2, .3, .45, .6  | x * exp(Legendre degree-3 field), as   |
|                |                                       | monai RandBiasField, seeded per image  |
| rotation       | degrees 5, 10, 15, 22.5, 30           | +-angle per image, bilinear, zero fill |

Why not the training augmentation's ops (`augment.BatchAugment`), which also blur, add noise,
change gamma/contrast/brightness, lower the resolution, rotate and add a bias field: those draw
random parameters per sample on the training device (torch, one seeded generator per run), where
these are fixed severities on the test images (numpy/scipy/monai, seeded per call) whose numbers
`robustness.json` publishes; sharing one implementation would change either the training draws
or every published robustness figure. The two bias fields differ on purpose: the augmentation's
is a cheap quadratic polynomial with a constant term (so it also varies the overall gain); this
one is monai RandBiasField's Legendre degree-3 model without one, so severities mean what
MONAI's do.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from scipy.ndimage import gaussian_filter

SEVERITIES = (1, 2, 3, 4, 5)
CorruptFn = Callable[[np.ndarray, float, np.random.Generator], np.ndarray]


@dataclass(frozen=True)
class Corruption:
    """A named corruption: `fn(x float N x C x H x W in [0, 1], parameter, rng) -> x`."""

    name: str
    fn: CorruptFn
    values: tuple[float, ...]
    parameter: str
    description: str

    def parameter_for(self, severity: int) -> float:
        return self.values[severity - 1]


CORRUPTIONS: dict[str, Corruption] = {}


def corruption(values: tuple[float, ...], parameter: str, description: str) -> Callable[[CorruptFn], CorruptFn]:
    """Decorator: register `fn` as the corruption of its name, with its parameter at severities 1..5."""

    def register(fn: CorruptFn) -> CorruptFn:
        CORRUPTIONS[fn.__name__] = Corruption(fn.__name__, fn, values, parameter, description)
        return fn

    return register


# ----------------------------------------------------------------------- corruptions
@corruption((0.02, 0.04, 0.06, 0.09, 0.12), "std", "additive Gaussian noise")
def gaussian_noise(x: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    """Additive Gaussian noise."""
    return x + rng.normal(0.0, std, size=x.shape).astype(np.float32)


@corruption((0.02, 0.04, 0.06, 0.09, 0.12), "std", "Rician (magnitude MRI) noise, monai RandRicianNoise")
def rician_noise(x: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    """Rician noise, the magnitude-MRI noise model (`monai.transforms.RandRicianNoise`)."""
    from monai.transforms import RandRicianNoise

    t = RandRicianNoise(prob=1.0, std=std, sample_std=False)
    t.set_random_state(seed=int(rng.integers(2**31)))
    n, c, h, w = x.shape
    out = t(x.reshape(n * c, h, w))
    return np.asarray(out.detach().cpu().numpy() if torch.is_tensor(out) else out).reshape(x.shape)


@corruption((0.5, 1.0, 1.5, 2.0, 3.0), "sigma px", "Gaussian blur")
def blur(x: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian blur; edge pixels repeated (monai GaussianSmooth zero-pads, darkening borders)."""
    return gaussian_filter(x, sigma=(0, 0, sigma, sigma), mode="nearest")


@corruption((0.2, 0.35, 0.5, 0.65, 0.8), "intensity", "k-space motion ghosts (every 4th phase line)")
def motion_ghosting(x: np.ndarray, intensity: float, rng: np.random.Generator,
                    every: int = 4) -> np.ndarray:
    """Motion ghosts as in torchio RandomGhosting: every n-th phase-encoding line of k-space
    (rows) is scaled by (1 - intensity), the centre line kept."""
    k = np.fft.fftshift(np.fft.fft2(x, axes=(2, 3)), axes=(2, 3))
    centre = x.shape[2] // 2
    scale = np.ones(x.shape[2], dtype=np.float32)
    scale[::every] = 1.0 - intensity
    scale[centre] = 1.0
    k = k * scale[None, None, :, None]
    return np.abs(np.fft.ifft2(np.fft.ifftshift(k, axes=(2, 3)), axes=(2, 3))).astype(np.float32)


@corruption((0.4, 0.5, 0.6, 0.7, 0.8), "alpha", "Gibbs truncation artefact, monai GibbsNoise")
def gibbs_ringing(x: np.ndarray, alpha: float, rng: np.random.Generator) -> np.ndarray:
    """Truncation (Gibbs) artefact: k-space outside a circle removed (`monai GibbsNoise`)."""
    from monai.transforms import GibbsNoise

    n, c, h, w = x.shape
    out = GibbsNoise(alpha=alpha)(x.reshape(n * c, h, w))
    return np.asarray(out.detach().cpu().numpy() if torch.is_tensor(out) else out).reshape(x.shape)


@corruption((0.7, 0.55, 0.4, 0.3, 0.2), "factor", "contrast reduced towards the mean")
def contrast(x: np.ndarray, factor: float, rng: np.random.Generator) -> np.ndarray:
    """Contrast reduction towards each image's mean."""
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    return mean + (x - mean) * factor


@corruption((1.25, 1.5, 1.8, 2.2, 2.7), "gamma", "gamma curve (darker)")
def gamma(x: np.ndarray, g: float, rng: np.random.Generator) -> np.ndarray:
    """Gamma curve x ** g (`monai AdjustContrast` on a 0..1 image): darker mid-tones."""
    return np.power(np.clip(x, 0, 1), g)


@corruption((0.05, 0.1, 0.15, 0.2, 0.3), "offset", "brightness offset")
def brightness(x: np.ndarray, offset: float, rng: np.random.Generator) -> np.ndarray:
    """Brightness offset."""
    return x + offset


@corruption((60, 40, 25, 15, 8), "quality", "JPEG compression")
def jpeg(x: np.ndarray, quality: float, rng: np.random.Generator) -> np.ndarray:
    """JPEG compression round trip at the given quality (PIL)."""
    u8 = to_uint8(x)
    out = np.empty_like(u8)
    for i, img in enumerate(u8):
        planes = [img.transpose(1, 2, 0)] if img.shape[0] == 3 else list(img)
        decoded = []
        for plane in planes:
            buf = io.BytesIO()
            Image.fromarray(np.ascontiguousarray(plane)).save(buf, format="JPEG",
                                                             quality=int(quality))
            decoded.append(np.asarray(Image.open(io.BytesIO(buf.getvalue()))))
        out[i] = decoded[0].transpose(2, 0, 1) if img.shape[0] == 3 else np.stack(decoded)
    return out.astype(np.float32) / 255.0


@corruption((1.5, 2.0, 3.0, 4.0, 6.0), "factor", "lower resolution, up-sampled back")
def downsample(x: np.ndarray, factor: float, rng: np.random.Generator) -> np.ndarray:
    """Lower resolution: area down-sampling by `factor`, bilinear back to the input size."""
    t = torch.from_numpy(np.ascontiguousarray(x))
    h, w = x.shape[2:]
    small = F.interpolate(t, size=(max(1, round(h / factor)), max(1, round(w / factor))),
                          mode="area")
    return F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False).numpy()


def legendre_basis(h: int, w: int, degree: int = 3) -> np.ndarray:
    """(M, H, W) products P_i(y) P_j(x), 0 < i + j <= degree, as in monai RandBiasField."""
    ys, xs = np.linspace(-1, 1, h), np.linspace(-1, 1, w)
    eye = np.eye(degree + 1)
    py = np.stack([np.polynomial.legendre.legval(ys, eye[i]) for i in range(degree + 1)])
    px = np.stack([np.polynomial.legendre.legval(xs, eye[j]) for j in range(degree + 1)])
    terms = [(i, j) for i in range(degree + 1) for j in range(degree + 1 - i) if i + j > 0]
    return np.stack([np.outer(py[i], px[j]) for i, j in terms]).astype(np.float32)


@corruption((0.1, 0.2, 0.3, 0.45, 0.6), "max coefficient", "smooth MRI bias field, monai RandBiasField model")
def bias_field(x: np.ndarray, coeff: float, rng: np.random.Generator) -> np.ndarray:
    """Smooth multiplicative MRI bias field exp(sum c_ij P_i P_j), c ~ U(-coeff, coeff) each."""
    basis = legendre_basis(*x.shape[2:])
    c = rng.uniform(-1.0, 1.0, size=(x.shape[0], len(basis))).astype(np.float32) * coeff
    field = np.exp(np.tensordot(c, basis, axes=1))
    return x * field[:, None]


@corruption((5.0, 10.0, 15.0, 22.5, 30.0), "degrees", "in-plane rotation")
def rotation(x: np.ndarray, degrees: float, rng: np.random.Generator) -> np.ndarray:
    """Rotation by +-degrees (sign drawn per image) about the centre; zeros fill the corners."""
    n = x.shape[0]
    sign = np.where(rng.random(n) < 0.5, -1.0, 1.0)
    theta = np.deg2rad(degrees) * sign
    cos, sin = np.cos(theta), np.sin(theta)
    mats = np.zeros((n, 2, 3), dtype=np.float32)
    mats[:, 0, 0], mats[:, 0, 1], mats[:, 1, 0], mats[:, 1, 1] = cos, -sin, sin, cos
    t = torch.from_numpy(np.ascontiguousarray(x))
    grid = F.affine_grid(torch.from_numpy(mats), list(t.shape), align_corners=False)
    return F.grid_sample(t, grid, mode="bilinear", padding_mode="zeros",
                         align_corners=False).numpy()


# ----------------------------------------------------------------------- public API
def to_uint8(x: np.ndarray) -> np.ndarray:
    """Float image in [0, 1] -> uint8, rounded and clipped."""
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


def get_corruption(name: str) -> Corruption:
    """The registered corruption called `name`; the error lists the valid names."""
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; choose one of {', '.join(CORRUPTIONS)}")
    return CORRUPTIONS[name]


def corrupt(images, name: str, severity: int, *, seed: int = 0):
    """Corrupt a uint8 N x C x H x W batch (numpy or torch); returns the same type and device."""
    c = get_corruption(name)
    if severity not in (0, *SEVERITIES):
        raise ValueError(f"severity must be 0..{SEVERITIES[-1]}, got {severity}")
    is_tensor = torch.is_tensor(images)
    arr = images.detach().cpu().numpy() if is_tensor else np.asarray(images)
    if arr.dtype != np.uint8 or arr.ndim != 4:
        raise ValueError(f"expected uint8 N x C x H x W images, got {arr.dtype} {arr.shape}")
    if severity == 0:
        out = arr.copy()
    else:
        grey = arr.shape[1] > 1 and bool(np.all(arr == arr[:, :1]))
        x = (arr[:, :1] if grey else arr).astype(np.float32) / 255.0
        y = to_uint8(c.fn(x, c.parameter_for(severity), np.random.default_rng(seed)))
        out = np.repeat(y, arr.shape[1], axis=1) if grey else y
    return torch.from_numpy(out).to(images.device) if is_tensor else out


def describe_corruptions() -> list[dict]:
    """One row per corruption: name, description, parameter and its values at severities 1..5."""
    return [{"name": c.name, "description": c.description, "parameter": c.parameter,
             "values": list(c.values)} for c in CORRUPTIONS.values()]
