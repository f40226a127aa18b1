"""torchvision families with a fresh head; ImageNet weights through torchvision's Weights enums."""

from __future__ import annotations

from typing import Callable

from torch import nn

from mediscan.models.registry import register_model
from mediscan.models.weights import fetch_url_weights


def _build(arch: str, weights_name: str, pretrained: bool) -> nn.Module:
    import torchvision  # here, not at import: seconds to load, and every command imports mediscan.models

    model = getattr(torchvision.models, arch)(weights=None)
    if pretrained:
        weights = torchvision.models.get_weight(weights_name)
        model.load_state_dict(fetch_url_weights(weights.url, arch))
    return model


def _replace_linear(parent: nn.Module, attr: str, num_classes: int) -> None:
    """Swap the Linear layer `parent.<attr>` (or a Sequential's last Linear) for a new head."""
    layer = getattr(parent, attr)
    if isinstance(layer, nn.Sequential):
        _replace_linear(layer, str(len(layer) - 1), num_classes)
        return
    setattr(parent, attr, nn.Linear(layer.in_features, num_classes))


def _family(name: str, arch: str, weights_name: str, head: str, cam_layer: str, size: int,
            description: str, early_layers: tuple[str, ...] = (),
            finer_cam_layers: tuple[str, ...] = ()) -> Callable[..., nn.Module]:
    @register_model(name, input_size=size, cam_layer=cam_layer, description=description,
                    pretrained_source=f"torchvision {weights_name}", family="torchvision",
                    early_layers=early_layers, finer_cam_layers=finer_cam_layers)
    def builder(num_classes: int, pretrained: bool = False) -> nn.Module:
        model = _build(arch, weights_name, pretrained)
        _replace_linear(model, head, num_classes)
        return model

    return builder


_FAMILIES = [
    ("resnet18", "resnet18", "ResNet18_Weights.IMAGENET1K_V1", "fc", "layer4", 224,
     "ResNet-18 (11.2M params; seed recipe 5)", ("conv1", "bn1", "layer1"), ("layer3", "layer2")),
    ("resnet50", "resnet50", "ResNet50_Weights.IMAGENET1K_V2", "fc", "layer4", 224,
     "ResNet-50 (23.5M params)", ("conv1", "bn1", "layer1"), ("layer3", "layer2")),
    ("vgg16", "vgg16", "VGG16_Weights.IMAGENET1K_V1", "classifier", "features.29", 224,
     "VGG16 (134M params; seed recipe 3)"),
    ("densenet121", "densenet121", "DenseNet121_Weights.IMAGENET1K_V1", "classifier",
     "features.norm5", 224, "DenseNet-121 (7M params)"),
    ("efficientnet_b0", "efficientnet_b0", "EfficientNet_B0_Weights.IMAGENET1K_V1", "classifier",
     "features.8", 224, "EfficientNet-B0 (4M params)", (), ("features.5", "features.3")),
    ("mobilenet_v3_small", "mobilenet_v3_small", "MobileNet_V3_Small_Weights.IMAGENET1K_V1",
     "classifier", "features.12", 224, "MobileNetV3-Small (1.5M params)"),
]

for _spec in _FAMILIES:
    _family(*_spec)
