"""Which training images an epoch draws: a permutation, class-balanced draws, or draws balanced over
classes and groups of look-alike images.

In the brain Training folder how an image looks, apart from any lesion, tells the classes apart:
the no-tumour images are mostly axial T2 and FLAIR, the tumour images contrast-enhanced T1, many
of them sagittal or coronal (the shortcut audit measures the contrast and framing; the errors of
a model on its own test split show the view: sagittal and coronal normal brains called tumours).
Grouping the training images by a label-irrelevant signature and drawing every class with the
groups' overall shares (the ratio to the class's own share capped at `MAX_RATIO`) makes a group say
less about the class within the draws. `balance="sources"` groups by the intensity histogram inside
the head (a proxy of the MRI contrast); `balance="layout"` by a 16 x 16 thumbnail (the view,
framing and coarse contrast), which gives the rare sagittal and coronal normal brains their share
of the no-tumour draws."""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.cluster import KMeans

from mediscan.data.shortcuts import head_intensity

GROUPS = 8
MAX_RATIO = 4.0
LAYOUT_SIDE = 16


def intensity_signature(image: np.ndarray) -> list[float]:
    """The shortcut audit's intensity properties of one uint8 (C, H, W) image (zeros when blank)."""
    values = head_intensity(image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0))
    return [0.0 if np.isnan(v) else v for v in values]


def layout_signature(image: np.ndarray) -> np.ndarray:
    """A uint8 (C, H, W) image's first channel averaged down to 16 x 16, standardised (zeros when blank)."""
    grey = torch.from_numpy(np.asarray(image[0], dtype=np.float32))[None, None]
    thumb = F.adaptive_avg_pool2d(grey, LAYOUT_SIDE).flatten().numpy().astype(np.float64)
    return (thumb - thumb.mean()) / (thumb.std() + 1e-6)


def intensity_groups(images: np.ndarray, *, groups: int = GROUPS, seed: int = 0) -> np.ndarray:
    """The k-means group of each uint8 (N, C, H, W) image's standardised intensity signature."""
    features = np.array([intensity_signature(np.asarray(image)) for image in images], dtype=np.float64)
    return _kmeans((features - features.mean(0)) / (features.std(0) + 1e-9), groups, seed)


def layout_groups(images: np.ndarray, *, groups: int = GROUPS, seed: int = 0) -> np.ndarray:
    """The k-means group of each uint8 (N, C, H, W) image's layout signature."""
    return _kmeans(np.array([layout_signature(image) for image in images]), groups, seed)


def _kmeans(features: np.ndarray, groups: int, seed: int) -> np.ndarray:
    k = max(1, min(groups, len(features)))
    return KMeans(k, n_init=4, random_state=seed).fit_predict(features)


class Grouping(NamedTuple):
    """How a balance groups the training images, and what to call the groups."""

    groups: Callable[..., np.ndarray]
    kind: str


GROUPINGS = {  # the balances that draw over groups
    "sources": Grouping(intensity_groups,
                        "intensity groups (the histogram inside the foreground; in MRI, the contrast)"),
    "layout": Grouping(layout_groups, "layout groups (16 x 16 thumbnails: view, framing, coarse contrast)"),
}


def sampling_weights(labels: np.ndarray, balance: str, groups: np.ndarray | None = None) -> torch.Tensor | None:
    """Per-image draw weights (None: a plain permutation), each class's summing to 1: drawn equally often."""
    if balance != "sampler" and balance not in GROUPINGS:
        return None
    labels = np.asarray(labels)
    weights = np.zeros(len(labels), dtype=np.float32)
    for c in np.unique(labels):
        members = labels == c
        if balance == "sampler":
            weights[members] = np.float32(1.0) / np.float32(members.sum())
        else:
            ratio = _group_ratio(groups, members)
            weights[members] = ratio / ratio.sum()
    return torch.from_numpy(weights)


def _group_ratio(groups: np.ndarray, members: np.ndarray) -> np.ndarray:
    """Per member of a class: its group's overall share over its share in the class, capped, per image."""
    k = int(groups.max()) + 1
    overall = np.bincount(groups, minlength=k) / len(groups)
    in_class = np.bincount(groups[members], minlength=k)
    ratio = np.clip(overall / np.maximum(in_class / members.sum(), 1e-12), 1 / MAX_RATIO, MAX_RATIO)
    return ratio[groups[members]]


def group_shares(labels: np.ndarray, groups: np.ndarray, weights: torch.Tensor | None = None) -> np.ndarray:
    """(classes, groups) share of each class's draws (or images, without weights) in each group."""
    labels = np.asarray(labels)
    w = np.ones(len(labels)) if weights is None else weights.numpy()
    table = np.zeros((int(labels.max()) + 1, int(groups.max()) + 1))
    np.add.at(table, (labels, groups), w)
    return table / np.maximum(table.sum(1, keepdims=True), 1e-12)


def largest_group_gap(labels: np.ndarray, groups: np.ndarray, weights: torch.Tensor | None = None) -> float:
    """Over the classes, the largest share of a class's draws (or images) that would have to change group
    for its mix of groups to match the overall one (total variation distance)."""
    overall = np.bincount(groups) / len(groups)
    return float(np.abs(group_shares(labels, groups, weights) - overall).sum(1).max() / 2)


def epoch_order(n: int, weights: torch.Tensor | None, generator: torch.Generator) -> torch.Tensor:
    """This epoch's sample order: a permutation, or n weighted draws with replacement."""
    if weights is None:
        return torch.randperm(n, generator=generator)
    return torch.multinomial(weights, n, replacement=True, generator=generator)
