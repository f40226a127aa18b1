"""Untrained model bundles for tests that only need one to load."""

from mediscan.models import model_config
from mediscan.transforms import Preprocess


def minimal_meta(model: str, classes: list[str], size: int = 64) -> dict:
    """The model.json keys loading needs."""
    cfg = model_config(model)
    return {"model": model, "classes": classes, "preprocess": Preprocess(size=size).to_dict(),
            "mean": list(cfg.mean), "std": list(cfg.std), "temperature": 1.0}
