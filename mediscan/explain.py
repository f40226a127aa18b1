"""Grad-CAM and Grad-CAM++ (pytorch-grad-cam) for any registered model, and PNG overlays.

The class activation map is computed on the *preprocessed* view — the uint8 C x S x S image
the model actually sees after the bundle's crop, intensity clipping and resize — so the map
and the overlay are at S x S, aligned with that view, not with the original file's pixels.
The target layer is the model config's `cam_layer` (overridable), else the last Conv2d.
Gradients are needed, so explanations use the torch backend only.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from mediscan.data.readers import ImageReadError, read_image
from mediscan.models import model_config
from mediscan.predict import Classifier, Prediction
from mediscan.progress import console
from mediscan.transforms import normalize

METHODS = ("gradcam", "gradcam++")
DEFAULT_ALPHA = 0.45


def cam_class(method: str) -> type:
    """The pytorch-grad-cam class for a method name."""
    from pytorch_grad_cam import GradCAM, GradCAMPlusPlus

    classes = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus}
    if method not in classes:
        raise ValueError(f"unknown CAM method {method!r}; choose one of {', '.join(METHODS)}")
    return classes[method]


def find_target_layer(model: nn.Module, architecture: str | None = None,
                      layer: str | None = None) -> nn.Module:
    """`layer` if given, else the registry's cam_layer for `architecture`, else the last Conv2d."""
    name = layer or (_registered_cam_layer(architecture) if architecture else "")
    if name:
        try:
            return model.get_submodule(name)
        except AttributeError:
            raise ValueError(f"the model has no layer {name!r}; pass a dotted name from "
                             "model.named_modules()") from None
    convs = [module for module in model.modules() if isinstance(module, nn.Conv2d)]
    if not convs:
        raise ValueError("the model has no Conv2d layer; name a target layer explicitly")
    return convs[-1]


def _registered_cam_layer(architecture: str) -> str:
    try:
        return model_config(architecture).cam_layer
    except ValueError:
        return ""


def require_torch(classifier: Classifier) -> None:
    """Grad-CAM needs gradients: refuse an ONNX-backed classifier with what to do."""
    if classifier.model is None:
        raise ValueError("Grad-CAM needs gradients, which the ONNX backend has not; load the "
                         "classifier with backend='torch' (drop --backend onnx)")


def class_index(classifier: Classifier, target: str | int | None, predicted: str) -> int:
    """Index of the class to explain: a name, an index, or (None) the predicted class."""
    if target is None:
        return classifier.classes.index(predicted)
    if isinstance(target, int) and 0 <= target < len(classifier.classes):
        return target
    if target in classifier.classes:
        return classifier.classes.index(target)
    raise ValueError(f"unknown class {target!r}; choose one of {', '.join(classifier.classes)}")


def cam_for(classifier: Classifier, preprocessed: np.ndarray, index: int, *,
            method: str = "gradcam", layer: str | None = None) -> np.ndarray:
    """CAM (float32 S x S in [0, 1]) of class `index` for one preprocessed uint8 C x S x S image."""
    require_torch(classifier)
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = classifier.model.eval()
    target_layer = find_target_layer(model, classifier.meta.get("model"), layer)
    batch = torch.as_tensor(preprocessed[None]).to(classifier.device)
    x = normalize(batch, classifier.meta["mean"], classifier.meta["std"]).requires_grad_(True)
    with torch.enable_grad(), _frozen(model), cam_class(method)(model, [target_layer]) as cam:
        heat = cam(input_tensor=x, targets=[ClassifierOutputTarget(index)])[0]
    return np.clip(np.nan_to_num(heat.astype(np.float32)), 0.0, 1.0)


@contextmanager
def _frozen(model: nn.Module) -> Iterator[None]:
    """No weight gradients while explaining (the input carries the graph): faster, no .grad left."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for parameter, _ in flags:
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter, flag in flags:
            parameter.requires_grad_(flag)


def explain(classifier: Classifier, image: np.ndarray, *, method: str = "gradcam",
            target: str | int | None = None, layer: str | None = None
            ) -> tuple[np.ndarray, Prediction]:
    """(CAM S x S in [0, 1] on the preprocessed view, prediction) for a decoded uint8 image.

    `target` is the class to explain (name or index; default the predicted class) and
    `layer` overrides the target layer (a dotted module name)."""
    cam_class(method)  # an unknown method fails before any work
    require_torch(classifier)
    prediction = classifier.predict_arrays([image], ["array"])[0]
    preprocessed = classifier.preprocess(image)
    index = class_index(classifier, target, prediction.label)
    return cam_for(classifier, preprocessed, index, method=method, layer=layer), prediction


def to_rgb(image: np.ndarray) -> np.ndarray:
    """uint8 H x W x 3 from C x S x S (C = 1 or 3), H x W or H x W x 3."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[0] in (1, 3) and image.shape[-1] not in (1, 3):
        image = image.transpose(1, 2, 0)
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    return np.ascontiguousarray(image[..., :3].astype(np.uint8))


def heatmap(cam: np.ndarray) -> np.ndarray:
    """A [0, 1] map coloured with the jet colormap, uint8 H x W x 3."""
    from matplotlib import colormaps

    rgba = colormaps["jet"](np.clip(cam, 0.0, 1.0))
    return (rgba[..., :3] * 255 + 0.5).astype(np.uint8)


def overlay(image: np.ndarray, cam: np.ndarray, alpha: float = DEFAULT_ALPHA) -> np.ndarray:
    """The CAM's heatmap blended over the image (C x S x S or H x W[x3]): uint8 RGB H x W x 3."""
    rgb = to_rgb(image)
    if rgb.shape[:2] != cam.shape:
        raise ValueError(f"image {rgb.shape[:2]} and CAM {cam.shape} differ in size; overlay "
                         "the preprocessed image the CAM was computed on")
    blended = (1 - alpha) * rgb.astype(np.float32) + alpha * heatmap(cam).astype(np.float32)
    return np.clip(blended + 0.5, 0, 255).astype(np.uint8)


def _unique_name(path: Path, used: set[str]) -> str:
    name, count = f"{path.stem}_cam.png", 1
    while name in used:
        count += 1
        name = f"{path.stem}_{count}_cam.png"
    used.add(name)
    return name


def save_overlays(classifier: Classifier, paths: Sequence[str | Path], out_dir: str | Path, *,
                  method: str = "gradcam", layer: str | None = None) -> list[Path]:
    """Write one `<stem>_cam.png` overlay per readable image; unreadable files are reported."""
    cam_class(method)  # an unknown method fails before any work
    require_torch(classifier)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written, used = [], set()
    for path in map(Path, paths):
        try:
            image = read_image(path)
        except ImageReadError as error:
            console.print(f"[yellow]no overlay[/yellow] for {path}: {error.reason}", highlight=False)
            continue
        cam, _ = explain(classifier, image, method=method, layer=layer)
        target = out_dir / _unique_name(path, used)
        Image.fromarray(overlay(classifier.preprocess(image), cam)).save(target)
        written.append(target)
    return written
