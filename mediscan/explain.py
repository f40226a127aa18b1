"""Grad-CAM and Grad-CAM++ (pytorch-grad-cam) for any registered model, and PNG overlays.

The class activation map is computed on the *preprocessed* view — the uint8 C x S x S image
the model actually sees after the bundle's crop, intensity clipping and resize — so the map
and the overlay are at S x S, aligned with that view, not with the original file's pixels.
The target layer is the model config's `cam_layer`, or a finer registered layer when the
input is so small that its map has fewer than MIN_CAM_SIDE cells per side (overridable; a
comma-separated list fuses layers), else the last Conv2d. Grad-CAM++ is the default method.
`view_box` maps a location in the original file (a planted mass) onto that view, and
`peak_inside` scores the pointing game. Gradients are needed: the torch backend only.
"""

from __future__ import annotations

import weakref
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
from mediscan.transforms import Preprocess, foreground_box, placement, to_grey

METHODS = ("gradcam", "gradcam++")
COLORMAPS = ("jet", "inferno")
DEFAULT_ALPHA = 0.45
DEFAULT_METHOD = "gradcam++"  # peaks inside the phantom mass more often than Grad-CAM (bench/cam_pointing.py)
MIN_CAM_SIDE = 12  # cells per side a CAM needs to place a lesion about 1/10 of the image wide
_CHOSEN_LAYERS: weakref.WeakKeyDictionary[nn.Module, dict] = weakref.WeakKeyDictionary()


def cam_class(method: str) -> type:
    """The pytorch-grad-cam class for a method name."""
    from pytorch_grad_cam import GradCAM, GradCAMPlusPlus

    classes = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus}
    if method not in classes:
        raise ValueError(f"unknown CAM method {method!r}; choose one of {', '.join(METHODS)}")
    return classes[method]


def find_target_layers(model: nn.Module, architecture: str | None = None,
                       layer: str | None = None,
                       input_shape: tuple[int, ...] | None = None) -> list[nn.Module]:
    """`layer` if given, else the registry's default for `architecture`, else the last Conv2d.

    A comma-separated name ("layer2,layer3,layer4") gives several layers, whose maps
    pytorch-grad-cam averages after scaling each to the input. The registry's default is
    resolution-aware (`default_cam_layer`) when the input's C x H x W shape is known."""
    name = layer or (default_cam_layer(model, architecture, input_shape) if architecture else "")
    names = [part.strip() for part in name.split(",") if part.strip()]
    if names:
        return [_submodule(model, part) for part in names]
    convs = [module for module in model.modules() if isinstance(module, nn.Conv2d)]
    if not convs:
        raise ValueError("the model has no Conv2d layer; name a target layer explicitly")
    return [convs[-1]]


def default_cam_layer(model: nn.Module, architecture: str, input_shape: tuple[int, ...] | None = None) -> str:
    """The registry's cam_layer, or a finer one when its map has < MIN_CAM_SIDE cells per side.

    ResNet's layer4 is 7 x 7 at 224 px and 3 x 3 at 96 px: too coarse to place a lesion a
    tenth of the field of view wide, so small inputs fall back to layer3, then layer2."""
    try:
        config = model_config(architecture)
    except ValueError:
        return ""
    candidates = (config.cam_layer, *config.finer_cam_layers) if config.cam_layer else ()
    if len(candidates) < 2 or input_shape is None:
        return config.cam_layer
    chosen = _CHOSEN_LAYERS.setdefault(model, {})
    key = (architecture, tuple(input_shape))
    if key not in chosen:  # one probing forward pass per model and input shape, not per image
        sides = feature_sides(model, candidates, input_shape)
        chosen[key] = next((name for name in candidates if sides[name] >= MIN_CAM_SIDE), candidates[-1])
    return chosen[key]


def feature_sides(model: nn.Module, names: Sequence[str], input_shape: tuple[int, ...]) -> dict[str, int]:
    """The smaller spatial side of each named layer's output for one C x H x W input."""
    sides: dict[str, int] = {}

    def record(name: str):
        def hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
            sides[name] = min(output.shape[-2:])
        return hook

    hooks = [_submodule(model, name).register_forward_hook(record(name)) for name in names]
    parameter = next(model.parameters())
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *input_shape, dtype=parameter.dtype, device=parameter.device))
    finally:
        for hook in hooks:
            hook.remove()
    return sides


def _submodule(model: nn.Module, name: str) -> nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError:
        raise ValueError(f"the model has no layer {name!r}; pass a dotted name from "
                         "model.named_modules()") from None


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
            method: str = DEFAULT_METHOD, layer: str | None = None) -> np.ndarray:
    """CAM (float32 S x S in [0, 1]) of class `index` for one preprocessed uint8 C x S x S image."""
    require_torch(classifier)
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = classifier.model.eval()
    target_layers = find_target_layers(model, classifier.meta.get("model"), layer, preprocessed.shape)
    x = classifier.model_input(preprocessed[None]).requires_grad_(True)
    with torch.enable_grad(), _frozen(model), cam_class(method)(model, target_layers) as cam:
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


def explain(classifier: Classifier, image: np.ndarray, *, method: str = DEFAULT_METHOD,
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


def heatmap(cam: np.ndarray, colormap: str = "jet") -> np.ndarray:
    """A [0, 1] map coloured with a matplotlib colormap (jet or inferno), uint8 H x W x 3."""
    from matplotlib import colormaps

    if colormap not in COLORMAPS:
        raise ValueError(f"unknown colormap {colormap!r}; choose one of {', '.join(COLORMAPS)}")
    rgba = colormaps[colormap](np.clip(cam, 0.0, 1.0))
    return (rgba[..., :3] * 255 + 0.5).astype(np.uint8)


def overlay(image: np.ndarray, cam: np.ndarray, alpha: float = DEFAULT_ALPHA,
            colormap: str = "jet") -> np.ndarray:
    """The CAM's heatmap blended over the image (C x S x S or H x W[x3]): uint8 RGB H x W x 3."""
    rgb = to_rgb(image)
    if rgb.shape[:2] != cam.shape:
        raise ValueError(f"image {rgb.shape[:2]} and CAM {cam.shape} differ in size; overlay "
                         "the preprocessed image the CAM was computed on")
    blended = (1 - alpha) * rgb.astype(np.float32) + alpha * heatmap(cam, colormap).astype(np.float32)
    return np.clip(blended + 0.5, 0, 255).astype(np.uint8)


def save_overlay(image: np.ndarray, cam: np.ndarray, path: str | Path, *,
                 alpha: float = DEFAULT_ALPHA, colormap: str = "jet") -> Path:
    """Write `overlay(image, cam)` as a PNG (image = the preprocessed view); returns the path."""
    path = Path(path)
    Image.fromarray(overlay(image, cam, alpha, colormap)).save(path, format="PNG")
    return path


def view_box(preprocess: Preprocess, image: np.ndarray,
             box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    """A box (x0, y0, x1, y1) in the original image's pixels -> the same box on the preprocessed view.

    Follows `Preprocess`'s geometry (foreground crop, then pad or stretch to S x S), so that a
    known location (a planted mass) can be compared with a CAM."""
    sx, sy, ox, oy, left, top = _view_geometry(preprocess, image)
    x0, y0, x1, y1 = box
    return ((x0 - left) * sx + ox, (y0 - top) * sy + oy, (x1 - left) * sx + ox, (y1 - top) * sy + oy)


def _view_geometry(preprocess: Preprocess, image: np.ndarray) -> tuple[float, float, float, float, int, int]:
    """(scale x, scale y, offset x, offset y, crop left, crop top) of `Preprocess` on this image."""
    height, width = np.asarray(image).shape[:2]
    top, left = 0, 0
    if preprocess.crop_foreground:
        found = foreground_box(to_grey(np.asarray(image)))
        if found is not None:
            top, bottom, left, right = found
            height, width = bottom - top, right - left
    new_w, new_h, ox, oy = placement(width, height, preprocess.size, preprocess.fit)
    return new_w / width, new_h / height, ox, oy, left, top


def view_point_to_image(preprocess: Preprocess, image: np.ndarray,
                        point: tuple[float, float]) -> tuple[float, float]:
    """A point (x, y) on the preprocessed view -> the same point in the original image's pixels."""
    sx, sy, ox, oy, left, top = _view_geometry(preprocess, image)
    return (point[0] - ox) / sx + left, (point[1] - oy) / sy + top


def peak_inside(cam: np.ndarray, box: tuple[float, float, float, float]) -> bool:
    """The pointing game: does the CAM's maximum (pixel centre) lie inside box (x0, y0, x1, y1)?"""
    row, col = np.unravel_index(int(np.argmax(cam)), cam.shape)
    x0, y0, x1, y1 = box
    return bool(x0 <= col + 0.5 <= x1 and y0 <= row + 0.5 <= y1)


def _unique_name(path: Path, used: set[str]) -> str:
    name, count = f"{path.stem}_cam.png", 1
    while name in used:
        count += 1
        name = f"{path.stem}_{count}_cam.png"
    used.add(name)
    return name


def save_overlays(classifier: Classifier, paths: Sequence[str | Path], out_dir: str | Path, *,
                  method: str = DEFAULT_METHOD, layer: str | None = None) -> list[Path]:
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
        written.append(save_overlay(classifier.preprocess(image), cam, target))
    return written
