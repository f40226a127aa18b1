"""The class frequencies a trained model's probabilities assume, and the logit shift that sets them.

Balanced sampling (and synthetic lesions, which relabel some normal images) trains a network on
draws whose class shares are not the data's: its softmax then answers "which class, if every class
were drawn as often as in training". On an imbalanced set that over-calls the rare classes and
costs accuracy (DermaMNIST: 67% one class). Adding log(prior / draw share) to the logits turns the
answer into one under the chosen prior (logit adjustment: Menon et al., "Long-tail learning via
logit adjustment", ICLR 2021); the temperature is then fitted on validation with the shift in place.
`prior="train"`: the training split's class frequencies (probabilities calibrated on data like it,
accuracy); `"balanced"`: every class equally likely (balanced accuracy, rare-class recall);
`"draws"`: no shift, the shares the network was trained on (the seed tutorials' plain argmax)."""

from __future__ import annotations

import numpy as np
import torch

from mediscan.training.recipes import PRIORS


def draw_shares(labels: np.ndarray, num_classes: int, weights: torch.Tensor | None = None,
                class_weights: np.ndarray | None = None) -> np.ndarray:
    """The share of each class among the training draws (per-image draw `weights`, or a plain pass),
    as the loss sees them (`class_weights` of a weighted loss)."""
    labels = np.asarray(labels)
    per_image = np.ones(len(labels)) if weights is None else weights.numpy().astype(np.float64)
    shares = np.bincount(labels, weights=per_image, minlength=num_classes)
    if class_weights is not None:
        shares = shares * class_weights
    return shares / shares.sum()


def relabel(shares: np.ndarray, relabelled: tuple[int, int, float] | None) -> np.ndarray:
    """Class shares after `relabelled` = (from, to, share): that share of class `from` counted as class
    `to` (synthetic lesions painted into normal images); None: unchanged."""
    if relabelled is None:
        return shares
    source, target, share = relabelled
    moved = np.zeros_like(shares)
    moved[source], moved[target] = -shares[source] * share, shares[source] * share
    return shares + moved


def class_bias(labels: np.ndarray, draws: np.ndarray, prior: str,
               relabelled: tuple[int, int, float] | None = None) -> np.ndarray:
    """log(prior / draw share) per class: added to the logits, the probabilities assume `prior`.
    Augmentation that relabels (`relabelled`, see `relabel`) acts on both: the shift undoes the
    re-weighting of the draws, not what the augmentation teaches. A class absent from either keeps 0."""
    if prior not in PRIORS:
        raise ValueError(f"prior {prior!r} is not one of {', '.join(PRIORS)}")
    num_classes = len(draws)
    if prior == "draws":
        return np.zeros(num_classes)
    if prior == "train":
        target = np.bincount(np.asarray(labels), minlength=num_classes) / max(len(labels), 1)
    else:
        target = np.full(num_classes, 1.0 / num_classes)
    target, draws = relabel(target, relabelled), relabel(draws, relabelled)
    present = (draws > 0) & (target > 0)
    bias = np.zeros(num_classes)
    bias[present] = np.log(target[present] / draws[present])
    return bias
