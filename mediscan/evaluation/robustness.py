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

`robustness.json` (written by the robustness command, read by the report)::

    {"clean_accuracy": 0.97, "score": 0.88, "seed": 0, "severities": [1, 2, 3, 4, 5],
     "corruptions": {"blur": {"accuracy": [0.96, 0.95, 0.9, 0.85, 0.7],
                              "parameter": "sigma px", "values": [0.5, 1, 1.5, 2, 3]}, ...}}

as built by `robustness_results(clean_accuracy, accuracy_by_corruption, seed=...)`.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping, Sequence
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


# ----------------------------------------------------------------------- corruptions
def gaussian_noise(x: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    """Additive Gaussian noise."""
    return x + rng.normal(0.0, std, size=x.shape).astype(np.float32)


def rician_noise(x: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    """Rician noise, the magnitude-MRI noise model (`monai.transforms.RandRicianNoise`)."""
    from monai.transforms import RandRicianNoise

    t = RandRicianNoise(prob=1.0, std=std, sample_std=False)
    t.set_random_state(seed=int(rng.integers(2**31)))
    n, c, h, w = x.shape
    out = t(x.reshape(n * c, h, w))
    return np.asarray(out.detach().cpu().numpy() if torch.is_tensor(out) else out).reshape(x.shape)


def blur(x: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian blur; edge pixels repeated (monai GaussianSmooth zero-pads, darkening borders)."""
    return gaussian_filter(x, sigma=(0, 0, sigma, sigma), mode="nearest")


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


def gibbs_ringing(x: np.ndarray, alpha: float, rng: np.random.Generator) -> np.ndarray:
    """Truncation (Gibbs) artefact: k-space outside a circle removed (`monai GibbsNoise`)."""
    from monai.transforms import GibbsNoise

    n, c, h, w = x.shape
    out = GibbsNoise(alpha=alpha)(x.reshape(n * c, h, w))
    return np.asarray(out.detach().cpu().numpy() if torch.is_tensor(out) else out).reshape(x.shape)


def contrast(x: np.ndarray, factor: float, rng: np.random.Generator) -> np.ndarray:
    """Contrast reduction towards each image's mean."""
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    return mean + (x - mean) * factor


def gamma(x: np.ndarray, g: float, rng: np.random.Generator) -> np.ndarray:
    """Gamma curve x ** g (`monai AdjustContrast` on a 0..1 image): darker mid-tones."""
    return np.power(np.clip(x, 0, 1), g)


def brightness(x: np.ndarray, offset: float, rng: np.random.Generator) -> np.ndarray:
    """Brightness offset."""
    return x + offset


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


def bias_field(x: np.ndarray, coeff: float, rng: np.random.Generator) -> np.ndarray:
    """Smooth multiplicative MRI bias field exp(sum c_ij P_i P_j), c ~ U(-coeff, coeff) each."""
    basis = legendre_basis(*x.shape[2:])
    c = rng.uniform(-1.0, 1.0, size=(x.shape[0], len(basis))).astype(np.float32) * coeff
    field = np.exp(np.tensordot(c, basis, axes=1))
    return x * field[:, None]


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


def _register(*items: Corruption) -> dict[str, Corruption]:
    return {c.name: c for c in items}


CORRUPTIONS: dict[str, Corruption] = _register(
    Corruption("gaussian_noise", gaussian_noise, (0.02, 0.04, 0.06, 0.09, 0.12), "std",
               "additive Gaussian noise"),
    Corruption("rician_noise", rician_noise, (0.02, 0.04, 0.06, 0.09, 0.12), "std",
               "Rician (magnitude MRI) noise, monai RandRicianNoise"),
    Corruption("blur", blur, (0.5, 1.0, 1.5, 2.0, 3.0), "sigma px", "Gaussian blur"),
    Corruption("motion_ghosting", motion_ghosting, (0.2, 0.35, 0.5, 0.65, 0.8), "intensity",
               "k-space motion ghosts (every 4th phase line)"),
    Corruption("gibbs_ringing", gibbs_ringing, (0.4, 0.5, 0.6, 0.7, 0.8), "alpha",
               "Gibbs truncation artefact, monai GibbsNoise"),
    Corruption("contrast", contrast, (0.7, 0.55, 0.4, 0.3, 0.2), "factor",
               "contrast reduced towards the mean"),
    Corruption("gamma", gamma, (1.25, 1.5, 1.8, 2.2, 2.7), "gamma", "gamma curve (darker)"),
    Corruption("brightness", brightness, (0.05, 0.1, 0.15, 0.2, 0.3), "offset",
               "brightness offset"),
    Corruption("jpeg", jpeg, (60, 40, 25, 15, 8), "quality", "JPEG compression"),
    Corruption("downsample", downsample, (1.5, 2.0, 3.0, 4.0, 6.0), "factor",
               "lower resolution, up-sampled back"),
    Corruption("bias_field", bias_field, (0.1, 0.2, 0.3, 0.45, 0.6), "max coefficient",
               "smooth MRI bias field, monai RandBiasField model"),
    Corruption("rotation", rotation, (5.0, 10.0, 15.0, 22.5, 30.0), "degrees",
               "in-plane rotation"),
)


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


def _accuracy_list(values) -> list[float]:
    if isinstance(values, Mapping):
        return [float(values[k]) for k in sorted(values, key=int) if int(k) != 0]
    return [float(v) for v in values]


def robustness_score(clean_acc: float, acc_by_corruption: Mapping[str, Sequence[float]]) -> float:
    """Mean accuracy over all corruptions and severities divided by clean accuracy
    (the relative robustness of Hendrycks & Dietterich, ImageNet-C)."""
    if clean_acc <= 0:
        raise ValueError("clean accuracy must be positive")
    accs = [a for v in acc_by_corruption.values() for a in _accuracy_list(v)]
    if not accs:
        raise ValueError("no corruption accuracies given")
    return float(np.mean(accs) / clean_acc)


def robustness_results(
    clean_accuracy: float, acc_by_corruption: Mapping[str, Sequence[float]], *, seed: int = 0
) -> dict:
    """The JSON document of a robustness run (see the module docstring)."""
    corruptions = {}
    for name, values in acc_by_corruption.items():
        c = get_corruption(name)
        corruptions[name] = {"accuracy": _accuracy_list(values), "parameter": c.parameter,
                             "values": list(c.values), "description": c.description}
    return {
        "clean_accuracy": float(clean_accuracy),
        "score": robustness_score(clean_accuracy, acc_by_corruption),
        "seed": int(seed),
        "severities": list(SEVERITIES),
        "corruptions": corruptions,
    }
