"""One registry of models by name: `create_model(name, num_classes)` is how every command gets a network."""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from typing import Callable

from torch import nn

from mediscan.models.weights import WeightsUnavailableError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
UNIT_MEAN = (0.0, 0.0, 0.0)
UNIT_STD = (1.0, 1.0, 1.0)

Builder = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelConfig:
    """What a model needs around it: input size, channels, normalisation and its Grad-CAM layer."""

    name: str
    input_size: int
    channels: int = 3
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    cam_layer: str = ""
    finer_cam_layers: tuple[str, ...] = ()  # coarse -> fine: Grad-CAM's fallbacks for small inputs
    early_layers: tuple[str, ...] = ()  # what `freeze_early` keeps fixed when fine-tuning
    description: str = ""
    pretrained_source: str = ""
    fixed_input_size: bool = False  # Flatten + Dense: the network only takes `input_size` pixels
    takes_dropout: bool = False  # the builder takes drop_rate (before the head) and drop_path_rate (timm's)
    family: str = "mediscan"
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


_BUILDERS: dict[str, Builder] = {}
_CONFIGS: dict[str, ModelConfig] = {}
TIMM_PREFIX = "timm/"


def register_model(name: str, **config) -> Callable[[Builder], Builder]:
    """Decorator: register `builder(num_classes, pretrained=False) -> nn.Module` under `name`."""

    def decorate(builder: Builder) -> Builder:
        if name in _BUILDERS:
            warnings.warn(f"model {name!r} registered twice; the later one wins", stacklevel=2)
        _BUILDERS[name] = builder
        _CONFIGS[name] = ModelConfig(name=name, **config)
        return builder

    return decorate


def _timm_config(name: str) -> ModelConfig:
    import timm

    timm_name = name.removeprefix(TIMM_PREFIX)
    if not timm.is_model(timm_name):
        known = ", ".join(sorted(_CONFIGS))
        raise ValueError(
            f"unknown model {name!r}. Registered models: {known}; "
            "or any timm model as 'timm/<name>' (see `timm.list_models()`)."
        )
    cfg = timm.get_pretrained_cfg(timm_name)
    size = cfg.input_size[-1] if cfg is not None else 224
    mean = tuple(cfg.mean) if cfg is not None else IMAGENET_MEAN
    std = tuple(cfg.std) if cfg is not None else IMAGENET_STD
    return ModelConfig(
        name=TIMM_PREFIX + timm_name, input_size=size, mean=mean, std=std, family="timm",
        description=f"timm model {timm_name}", pretrained_source="timm hub or local cache",
    )


def build_timm(name: str, num_classes: int, *, pretrained: bool = False) -> nn.Module:
    """Any timm model by name; pretrained weights come from timm's hub cache or a download."""
    import timm

    try:
        return timm.create_model(name, pretrained=pretrained, num_classes=num_classes)
    except Exception as error:
        if not pretrained:
            raise
        raise WeightsUnavailableError(
            f"timm could not load ImageNet weights for {name} ({error.__class__.__name__}: "
            f"{error}). Pre-download them where the network allows (they are cached under "
            "~/.cache/huggingface), or train without --pretrained."
        ) from error


def model_config(name: str) -> ModelConfig:
    """The config of a registered model, or of a timm model by name."""
    if name in _CONFIGS:
        return _CONFIGS[name]
    return _timm_config(name)


def create_model(name: str, num_classes: int, *, pretrained: bool = False, dropout: float = 0.0,
                 drop_path: float = 0.0) -> nn.Module:
    """Build a network by name with a fresh `num_classes`-way head; `dropout` before the head and `drop_path`
    (stochastic depth: the deepest block's chance of being skipped) where the model takes them
    (`ModelConfig.takes_dropout`), and none elsewhere."""
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    config = model_config(name)
    if name in _BUILDERS:
        options = {"drop_rate": dropout, "drop_path_rate": drop_path} if config.takes_dropout else {}
        return _BUILDERS[name](num_classes, pretrained=pretrained, **options)
    return build_timm(name.removeprefix(TIMM_PREFIX), num_classes, pretrained=pretrained)


def list_models() -> list[ModelConfig]:
    """Configs of all registered models, sorted by name."""
    return [_CONFIGS[name] for name in sorted(_CONFIGS)]


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (trainable or not) of a model."""
    return sum(p.numel() for p in model.parameters())
