"""Models by name: `create_model(name, num_classes, pretrained=...)` (the timm habit)."""

from mediscan.models import seed_cnns, timm_models, torchvision_models  # noqa: F401  (registers)
from mediscan.models.registry import (
    ModelConfig,
    count_parameters,
    create_model,
    list_models,
    model_config,
    register_model,
)
from mediscan.models.weights import WeightsUnavailableError

__all__ = [
    "ModelConfig", "WeightsUnavailableError", "count_parameters", "create_model", "list_models",
    "model_config", "register_model",
]
