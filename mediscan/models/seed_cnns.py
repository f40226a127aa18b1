"""The tutorial CNNs of the seed recipes, reproduced layer for layer (Keras -> PyTorch)."""

from __future__ import annotations

from torch import nn

from mediscan.models.registry import UNIT_MEAN, UNIT_STD, register_model


def _conv_block(in_channels: int, out_channels: int) -> list[nn.Module]:
    """Keras Conv2D(3x3, padding='same', relu) followed by MaxPooling2D(2)."""
    return [nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2)]


class SeedCNN(nn.Module):
    """Recipe 1: Conv16-Pool-Conv32-Pool-Dropout-Flatten-Dense64-Dense32-Dense10-Dense(K)."""

    def __init__(self, num_classes: int, input_size: int = 130) -> None:
        super().__init__()
        self.features = nn.Sequential(*_conv_block(3, 16), *_conv_block(16, 32), nn.Dropout(0.2))
        side = input_size // 2 // 2
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(32 * side * side, 64), nn.ReLU(inplace=True),
            nn.Linear(64, 32), nn.ReLU(inplace=True),
            nn.Linear(32, 10), nn.ReLU(inplace=True),
            nn.Linear(10, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))


class TumorCNN(nn.Module):
    """Recipe 2: Conv16-Pool-Conv32-Pool-Conv64-Pool-Flatten-Dense512-Dense(K)."""

    def __init__(self, num_classes: int, input_size: int = 150) -> None:
        super().__init__()
        self.features = nn.Sequential(*_conv_block(3, 16), *_conv_block(16, 32), *_conv_block(32, 64))
        side = input_size // 2 // 2 // 2
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(64 * side * side, 512), nn.ReLU(inplace=True),
            nn.Linear(512, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))


def register_tutorial_cnn(name: str, network: type[nn.Module], **config) -> None:
    """Register a from-scratch tutorial CNN (no pretrained weights, inputs scaled to 0..1)."""

    def build(num_classes: int, pretrained: bool = False) -> nn.Module:
        if pretrained:
            raise ValueError(f"{name} is a from-scratch tutorial CNN and has no pretrained weights; "
                             "drop --pretrained or pick e.g. resnet18 or efficientnet_lite0.")
        return network(num_classes)

    register_model(name, mean=UNIT_MEAN, std=UNIT_STD, fixed_input_size=True, **config)(build)


register_tutorial_cnn(
    "seed_cnn", SeedCNN, input_size=130, cam_layer="features.4",
    description="Seed recipe 1: the 4-class Keras tutorial CNN (2,104,758 params with 4 classes)")
register_tutorial_cnn(
    "tumor_cnn", TumorCNN, input_size=150, cam_layer="features.7",
    description="Seed recipe 2: the binary tumour / no-tumour Keras tutorial CNN")
