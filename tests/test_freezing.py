"""What fine-tuning keeps fixed: the early layers, the large depthwise filters, only ever pretrained weights."""

import pytest
import torch
from torch import nn

import modality_data
from mediscan.run_folder import RunFolder
from mediscan.models import count_parameters, create_model, list_models, model_config
from mediscan.training.freezing import (
    MIN_EPOCHS_TO_TRAIN_ALL,
    freeze_early_layers,
    freeze_large_depthwise,
    freeze_pretrained,
    is_large_depthwise,
    train_all_for_tiny,
    training_images_per_second,
)
from mediscan.training.recipes import get_recipe
from mediscan.training.trainer import train


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


def test_tiny_images_train_every_layer_only_when_the_budget_fits_enough_epochs():
    cpu = get_recipe("cpu")
    assert cpu.tiny_train_all and get_recipe("default").tiny_train_all is False
    every, why = train_all_for_tiny(cpu, MIN_EPOCHS_TO_TRAIN_ALL + 4.4)
    assert (every.freeze_early, every.freeze_depthwise) == (False, False)
    assert why.startswith("every layer trained: tiny images, and the budget fits ~16 epochs that way")
    kept, why_kept = train_all_for_tiny(cpu, 9.0)
    assert kept is cpu and why_kept.startswith("early pretrained layers kept fixed: training every layer would "
                                               "fit ~9 epochs")
    assert not cpu.with_overrides(freeze_early=True).tiny_train_all  # asked-for freezing holds for tiny images


def test_the_training_probe_leaves_the_model_as_it_was():
    model = create_model("efficientnet_lite0", 2)
    freeze_early_layers(model, "efficientnet_lite0")
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainable = [p.requires_grad for p in model.parameters()]
    rate = training_images_per_second(model, batch_size=4, channels=3, size=32, device=torch.device("cpu"))
    assert rate > 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # batch-norm statistics too
    assert [p.requires_grad for p in model.parameters()] == trainable and not model.training
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("epochs, trained_all", [(2, True), (1, False)])
def test_train_records_the_choice_for_tiny_images_in_model_json_and_the_runs_recipe(tmp_path, monkeypatch, epochs,
                                                                                      trained_all):
    import mediscan.training.freezing as freezing

    monkeypatch.setattr(freezing, "MIN_EPOCHS_TO_TRAIN_ALL", 2)
    monkeypatch.setenv("MEDISCAN_CACHE", str(tmp_path / "cache"))
    data = modality_data.tiny_grey_npz(tmp_path / "pneumoniamnist.npz", n=24)
    run = RunFolder(train(data, recipe="cpu", out=tmp_path / "run", device="cpu", progress=False, workers=1,
                          epochs=epochs, input_size=32, batch_size=16, time_budget=0))
    meta = run.read_meta()
    assert (meta["recipe"]["freeze_early"], meta["recipe"]["freeze_depthwise"]) == (not trained_all,) * 2
    assert any(r.startswith("every layer trained" if trained_all else "early pretrained layers kept fixed")
               for r in meta["preprocess_reasons"])
    assert run.read_recipe()["freeze_early"] is (not trained_all)  # what --resume will train
