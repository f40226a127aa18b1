"""Out-of-distribution score: how unlike the training images an input is, and the "outside" verdict.

Method: Mahalanobis distance of the head's input features (the pooled penultimate vector,
scaled to unit length: the length mostly tracks contrast, the direction what the image shows) to
the nearest class mean, under one covariance shared by the classes and modelled as
probabilistic PCA (the top `RANK` directions of the class-centred training features plus an
isotropic residual variance). Means and covariance come from the training split (up to
`MAX_FIT_IMAGES` images, no augmentation); the threshold is set on the validation split's
scores so that at most `TARGET_RATE` (5%) of in-distribution images are flagged, with
`CONFIDENCE` (95%): the (k+1)-th largest validation score for the largest k whose one-sided
Clopper-Pearson bound on the exceedance rate stays within the target (k = 19 of 571 images,
the quantile 0.967). A fixed quantile (0.96 until stop 17) flagged 4.4%, 7.0% and 5.1% of three
brain models' test splits: a 4% aim on 571 validation images leaves too little margin.
The statistics live in `ood.safetensors` beside the model, the summary in model.json "ood".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file
from torch import nn

from mediscan.files import atomic_path
from mediscan.forward import batched_outputs
from mediscan.run_folder import OOD_FILE, RunFolder

METHOD = "l2-mahalanobis"
QUANTILE = 0.96  # what bundles without a recorded quantile used
TARGET_RATE = 0.05
CONFIDENCE = 0.95
RANK = 64
MAX_FIT_IMAGES = 2000
VERDICT = "outside what this model knows"


class OodStatisticsError(ValueError):
    """A run folder whose model.json names OOD statistics that cannot be read."""


def head_layer_name(model: nn.Module) -> str:
    """The module whose input is the pooled feature vector: timm's classifier, else the last Linear."""
    get_classifier = getattr(model, "get_classifier", None)
    head = get_classifier() if callable(get_classifier) else None
    linears = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    for name, module in model.named_modules():
        if module is head and isinstance(module, nn.Linear):
            return name
    if not linears:
        raise ValueError(f"{type(model).__name__} has no Linear head to read features from")
    return linears[-1]


def unit_length(features: np.ndarray) -> np.ndarray:
    """Rows scaled to unit Euclidean length (float64)."""
    features = np.asarray(features, dtype=np.float64)
    return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)


@dataclass
class FeatureDensity:
    """Class means and a shared low-rank-plus-isotropic covariance of training features."""

    means: np.ndarray  # K x D
    components: np.ndarray  # R x D, orthonormal rows
    variances: np.ndarray  # R, variance along each component
    residual_variance: float  # variance of every direction outside the components

    @classmethod
    def fit(cls, features: np.ndarray, labels: np.ndarray, rank: int = RANK) -> FeatureDensity:
        """Fit on features N x D with integer labels (classes without samples get no mean)."""
        from sklearn.decomposition import PCA

        features = unit_length(features)
        classes = np.unique(labels)
        means = np.stack([features[labels == k].mean(axis=0) for k in classes])
        centred = features - means[np.searchsorted(classes, labels)]
        rank = max(1, min(rank, len(features) - len(classes), features.shape[1] - 1))
        pca = PCA(n_components=rank, svd_solver="full").fit(centred)
        floor = 1e-6 * float(centred.var(axis=0).sum()) / features.shape[1] + 1e-12
        return cls(means.astype(np.float32), pca.components_.astype(np.float32),
                   np.maximum(pca.explained_variance_, floor).astype(np.float32),
                   max(float(pca.noise_variance_), floor))

    def score(self, features: np.ndarray) -> np.ndarray:
        """Mahalanobis distance to the nearest class mean, per row of features N x D."""
        features = unit_length(features)
        best = np.full(len(features), np.inf)
        for mean in self.means.astype(np.float64):
            diff = features - mean
            projected = diff @ self.components.T.astype(np.float64)
            inside = (projected ** 2 / self.variances).sum(axis=1)
            outside = np.maximum((diff ** 2).sum(axis=1) - (projected ** 2).sum(axis=1), 0.0)
            best = np.minimum(best, inside + outside / self.residual_variance)
        return np.sqrt(best)

    def tensors(self) -> dict[str, np.ndarray]:
        """What OOD_FILE holds, C-contiguous (safetensors writes the raw buffer)."""
        arrays = {"means": self.means, "components": self.components, "variances": self.variances,
                  "residual_variance": np.array([self.residual_variance])}
        return {name: np.ascontiguousarray(value, dtype=np.float32) for name, value in arrays.items()}


@dataclass
class OodDetector:
    """A fitted density, its threshold, and the layer whose input features it scores."""

    density: FeatureDensity
    threshold: float
    layer: str
    quantile: float = QUANTILE
    fit_images: int = 0
    calibration_images: int = 0

    def score(self, features: np.ndarray) -> np.ndarray:
        return self.density.score(features)

    def outside(self, scores: np.ndarray) -> np.ndarray:
        """True where a score lies above the threshold: unlike the training images."""
        return np.asarray(scores) > self.threshold

    def to_meta(self) -> dict:
        """The model.json "ood" block (the tensors are in OOD_FILE)."""
        return {"method": METHOD, "layer": self.layer, "file": OOD_FILE,
                "threshold": self.threshold, "quantile": self.quantile,
                "rank": int(len(self.density.variances)), "features": int(self.density.means.shape[1]),
                "fit_images": self.fit_images, "calibration_images": self.calibration_images}

    def save(self, run_dir: str | Path) -> None:
        with atomic_path(Path(run_dir) / OOD_FILE) as tmp:
            save_file(self.density.tensors(), str(tmp))


def load_detector(run_dir: str | Path, meta: dict) -> OodDetector | None:
    """The run's detector, or None for bundles written before OOD statistics existed."""
    block = meta.get("ood")
    if not block:
        return None
    path = Path(run_dir) / block.get("file", OOD_FILE)
    try:
        tensors = load_file(str(path))
        density = FeatureDensity(tensors["means"], tensors["components"], tensors["variances"],
                                 float(tensors["residual_variance"][0]))
        return OodDetector(density, float(block["threshold"]), str(block["layer"]),
                           float(block.get("quantile", QUANTILE)), int(block.get("fit_images", 0)),
                           int(block.get("calibration_images", 0)))
    except (OSError, KeyError, TypeError, ValueError, IndexError, SafetensorError) as error:
        raise OodStatisticsError(
            f"{path}: the out-of-distribution statistics named in model.json cannot be read "
            f"({error.__class__.__name__}: {error}); restore the file, or recompute it with "
            f"`python bench/ood.py {run_dir} --calibrate`.") from None


def _features(model: nn.Module, layer: str, images: np.ndarray, *, mean, std, device,
              tta: bool) -> np.ndarray:
    return batched_outputs(model, images, mean=mean, std=std, device=device, tta=tta,
                           feature_layer=model.get_submodule(layer)).features


def fit_detector(model: nn.Module, prepared, *, device, tta: bool = False, seed: int = 0,
                 val_features: np.ndarray | None = None) -> OodDetector | None:
    """Fit on the training split, threshold on the validation split; None without both.
    `val_features`: the validation split's head features if the caller has them (training's last pass)."""
    train, val = np.sort(prepared.indices["train"]), np.sort(prepared.indices["val"])
    if len(val) == 0 or len(train) < 2:
        return None
    if len(train) > MAX_FIT_IMAGES:
        train = np.sort(np.random.default_rng(seed).choice(train, MAX_FIT_IMAGES, replace=False))
    layer = head_layer_name(model)
    options = dict(mean=prepared.mean, std=prepared.std, device=device, tta=tta)
    train_features = _features(model, layer, prepared.decoded.images[train], **options)
    density = FeatureDensity.fit(train_features, prepared.folder.labels[train])
    if val_features is None:
        val_features = _features(model, layer, prepared.decoded.images[val], **options)
    val_scores = density.score(val_features)
    threshold, quantile = bounded_threshold(val_scores)
    return OodDetector(density, threshold, layer, quantile, fit_images=len(train), calibration_images=len(val))


def exceedances_allowed(n: int, target: float = TARGET_RATE, confidence: float = CONFIDENCE) -> int:
    """The most of n validation scores that may lie above the threshold while the one-sided
    Clopper-Pearson `confidence` bound on the exceedance rate stays <= target (0 when none does)."""
    from scipy.stats import beta

    k = 0
    while k + 1 < n and beta.ppf(confidence, k + 2, n - k - 1) <= target:
        k += 1
    return k


def bounded_threshold(scores: np.ndarray) -> tuple[float, float]:
    """(threshold, quantile): the (k+1)-th largest score, k = `exceedances_allowed(len(scores))`."""
    ordered = np.sort(np.asarray(scores, dtype=np.float64))
    k = exceedances_allowed(len(ordered))
    return float(ordered[len(ordered) - k - 1]), 1.0 - k / len(ordered)


def calibrate_run(run_dir: str | Path, *, device=None, progress: bool = True) -> OodDetector | None:
    """Add OOD statistics to an existing run folder (its data must be on this machine)."""
    from mediscan.bundle import load_bundle
    from mediscan.data.prepare import load_run_data
    from mediscan.forward import pick_device

    device = pick_device(device)
    model, meta = load_bundle(Path(run_dir), device=device)
    prepared = load_run_data(Path(run_dir), meta, progress=progress)
    detector = fit_detector(model, prepared, device=device, tta=bool(meta.get("tta")))
    if detector is not None:
        detector.save(run_dir)
        RunFolder(run_dir).write_meta({**meta, "ood": detector.to_meta()})
    return detector
