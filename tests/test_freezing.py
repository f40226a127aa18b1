"""What fine-tuning keeps fixed: the early layers, the large depthwise filters, only ever pretrained weights."""

import pytest
import torch
from torch import nn

from mediscan.models import count_parameters, create_model, list_models, model_config
from mediscan.training.freezing import (
    freeze_early_layers,
    freeze_large_depthwise,
    freeze_pretrained,
    is_large_depthwise,
)
from mediscan.training.recipes import get_recipe


def _backward(model: nn.Module) -> None:
    model(torch.randn(2, 3, 64, 64)).sum().backward()


@pytest.mark.parametrize("name", [c.name for c in list_models() if c.early_layers])
def test_freeze_early_layers_stops_their_gradients(name):
    model = create_model(name, 2)
    frozen = freeze_early_layers(model, name)
    assert 0 < frozen < count_parameters(model)
    _backward(model)
    first = model.get_submodule(model_config(name).early_layers[0])
    assert all(p.grad is None for p in first.parameters())
    assert any(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_large_depthwise_filters_are_fixed_and_everything_else_trains():
    model = create_model("efficientnet_lite0", 4)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    large = [m for m in convs if is_large_depthwise(m)]
    small = [m for m in convs if m.groups == m.in_channels > 1 and m.kernel_size == (3, 3)]
    assert len(large) == 9 and len(small) == 7  # Lite0: stages 2, 4 and 5 are 5 x 5, the rest 3 x 3
    frozen = freeze_large_depthwise(model)
    assert frozen == sum(m.weight.numel() for m in large)
    assert frozen < 0.06 * count_parameters(model)
    _backward(model)
    assert all(m.weight.grad is None for m in large)
    assert all(m.weight.grad is not None for m in small)
    pointwise = [m for m in convs if m.groups == 1 and m.kernel_size == (1, 1)]
    assert all(m.weight.grad is not None for m in pointwise)


def test_depthwise_freezing_counts_only_what_it_froze():
    model = create_model("efficientnet_lite0", 4)
    early = freeze_early_layers(model, "efficientnet_lite0")
    later = freeze_large_depthwise(model)  # after the early stages: theirs were frozen already
    early_names = model_config("efficientnet_lite0").early_layers
    assert later == sum(m.weight.numel() for name, m in model.named_modules()
                        if is_large_depthwise(m) and not name.startswith(early_names))
    assert early > 0 and freeze_large_depthwise(model) == 0


def test_models_without_depthwise_filters_are_left_alone():
    model = create_model("resnet18", 4)
    assert freeze_large_depthwise(model) == 0
    assert all(p.requires_grad for p in model.parameters())


def test_the_cpu_recipe_freezes_both_and_a_model_from_scratch_neither():
    recipe = get_recipe("cpu")
    assert recipe.freeze_early and recipe.freeze_depthwise
    model = create_model(recipe.model, 4)
    frozen = freeze_pretrained(model, recipe)
    assert frozen == count_parameters(model) - sum(p.numel() for p in model.parameters() if p.requires_grad)
    scratch = recipe.with_overrides(pretrained=False)  # `--no-pretrained`: random filters are never kept fixed
    assert not scratch.freeze_early and not scratch.freeze_depthwise
    model = create_model(recipe.model, 4)
    assert freeze_pretrained(model, scratch) == 0
    assert all(p.requires_grad for p in model.parameters())
