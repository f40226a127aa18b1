"""Synthetic lesions: which classes, which images, where the paint goes, reproducibility."""

import dataclasses

import pytest
import torch

from mediscan.augment import filled_head
from mediscan.lesion_synthesis import LesionConfig, LesionSynthesis, lesion_classes
from mediscan.training.recipes import get_recipe
from mediscan.training.trainer import lesion_synthesis_for


@pytest.mark.parametrize("classes, expected", [
    (["glioma", "meningioma", "notumor", "pituitary"], (2, 0)),
    (["no", "yes"], (0, 1)),
    (["tumor", "normal"], (1, 0)),
    (["meningioma", "notumor", "pituitary"], None),  # nothing intra-axial to paint
    (["parasitized", "uninfected"], None),
    (["cat", "dog", "notumor"], None),
])
def test_lesion_classes(classes, expected):
    assert lesion_classes(classes) == expected


def heads(n: int = 6, size: int = 64) -> torch.Tensor:
    """Grey discs (heads) of mid intensity on black, with a little texture."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    disc = (((yy - size / 2) ** 2 + (xx - size / 2) ** 2) < (0.4 * size) ** 2).float()
    texture = 0.4 + 0.05 * torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(0))
    return (disc * texture).expand(n, 3, size, size).clone()


def test_only_normal_images_get_a_lesion_and_its_label():
    images, labels = heads(), torch.tensor([2, 0, 2, 1, 2, 3])
    out, new = LesionSynthesis(2, 0, LesionConfig(probability=1.0), seed=1)(images, labels)
    assert new.tolist() == [0, 0, 0, 1, 0, 3]
    changed = (out - images).abs().flatten(1).amax(dim=1)
    assert (changed[[0, 2, 4]] > 0.1).all()  # a visible lesion in every normal image
    assert (changed[[1, 3, 5]] == 0).all()  # tumour images untouched


def test_lesion_stays_inside_the_head_and_covers_a_minority_of_it():
    images = heads()
    out, _ = LesionSynthesis(0, 1, LesionConfig(probability=1.0), seed=2)(images, torch.zeros(6, dtype=torch.long))
    outside = filled_head(images) == 0
    assert torch.equal(out.expand_as(images)[outside.expand_as(images)], images[outside.expand_as(images)])
    changed = ((out - images).abs() > 0.05)[:, 0].flatten(1).float().mean(dim=1)
    head_share = (~outside)[:, 0].flatten(1).float().mean(dim=1)
    assert (changed > 0.005).all() and (changed < head_share).all()


def test_lesions_are_brighter_or_darker_at_random():
    images = heads(40)
    out, _ = LesionSynthesis(0, 1, LesionConfig(probability=1.0, core=(0.0, 0.0)), seed=3)(
        images, torch.zeros(40, dtype=torch.long))
    shift = (out - images)[:, 0].flatten(1)
    brighter = (shift.amax(dim=1) > 0.1).sum()
    darker = (shift.amin(dim=1) < -0.1).sum()
    assert brighter >= 8 and darker >= 8


def test_same_seed_same_lesions_and_probability_zero_is_identity():
    images, labels = heads(), torch.zeros(6, dtype=torch.long)
    a = LesionSynthesis(0, 1, LesionConfig(probability=0.5), seed=4)(images, labels)
    b = LesionSynthesis(0, 1, LesionConfig(probability=0.5), seed=4)(images, labels)
    torch.testing.assert_close(a[0], b[0])
    assert torch.equal(a[1], b[1]) and 0 < int(a[1].sum()) < 6
    out, same = LesionSynthesis(0, 1, LesionConfig(probability=0.0))(images, labels)
    assert torch.equal(out, images) and torch.equal(same, labels)


def test_recipe_switches_lesions_on_for_brain_mri_only():
    cpu = dataclasses.replace(get_recipe("cpu"), augment="mri")
    assert cpu.lesions > 0
    brain = ["glioma", "meningioma", "notumor", "pituitary"]
    assert isinstance(lesion_synthesis_for(cpu, brain, seed=0), LesionSynthesis)
    assert isinstance(lesion_synthesis_for(dataclasses.replace(cpu, augment="mri-contrast"), brain, seed=0),
                      LesionSynthesis)
    assert lesion_synthesis_for(dataclasses.replace(cpu, augment="strong"), brain, seed=0) is None
    assert lesion_synthesis_for(cpu, ["parasitized", "uninfected"], seed=0) is None
    assert lesion_synthesis_for(dataclasses.replace(cpu, lesions=0.0), brain, seed=0) is None
