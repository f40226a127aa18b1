"""ONNX export of a run folder, checked against PyTorch (`onnx_backend.OnnxBackend` runs the file).

`model.onnx` takes the *preprocessed* uint8 N x C x S x S batch (the bundle's `Preprocess`,
recorded in the file's metadata) and returns logits; the mean/std normalisation (and the
horizontal-flip average when the run uses TTA) is inside the graph, so every consumer feeds
the same uint8 pixels as `Classifier.predict_batch`. Softmax with the metadata's temperature and class bias
gives the calibrated probabilities. When the bundle has out-of-distribution statistics, the
graph has a second output, `features` (the head's input, N x D), so the ONNX backend scores
inputs with the same `ood.safetensors` as PyTorch; the parity check covers those scores too.
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mediscan.bundle import load_bundle
from mediscan.data.folders import Sample, read_sample
from mediscan.files import write_atomic
from mediscan.forward import captured_inputs, tta_logits
from mediscan.onnx_backend import FEATURES_NAME, INPUT_NAME, OUTPUT_NAME, ExportError, OnnxBackend
from mediscan.ood import load_detector
from mediscan.predict import Classifier
from mediscan.run_folder import RunFolder
from mediscan.transforms import Preprocess, normalize

PARITY_TOLERANCE = 1e-4
OOD_PARITY_TOLERANCE = 1e-3  # relative
RANDOM_CHECK_IMAGES = 6
DATA_CHECK_IMAGES = 8


class Deployable(nn.Module):
    """uint8 N x C x S x S -> logits (and `feature_layer`'s input features): normalisation
    (and TTA) folded in front of the network."""

    def __init__(self, model: nn.Module, mean, std, tta: bool = False,
                 feature_layer: str | None = None) -> None:
        super().__init__()
        self.model, self.mean, self.std, self.tta = model, tuple(mean), tuple(std), tta
        self.feature_layer = feature_layer

    def forward(self, images: torch.Tensor):
        x = normalize(images, self.mean, self.std)
        layer = self.model.get_submodule(self.feature_layer) if self.feature_layer else None
        with captured_inputs(layer) as features:
            logits = tta_logits(self.model, x, self.tta)
        if layer is None:
            return logits
        return logits, sum(features) / len(features)


def onnx_metadata(meta: dict) -> dict[str, str]:
    """What a consumer needs beside the graph, each value JSON-encoded."""
    values = {
        "model": meta["model"], "name": meta.get("name") or meta["model"],
        "classes": meta["classes"], "preprocess": meta["preprocess"], "mean": meta["mean"],
        "std": meta["std"], "temperature": float(meta["temperature"]),
        "class_bias": list(meta.get("class_bias") or [0.0] * len(meta["classes"])),
        "tta": bool(meta.get("tta")), "created": meta.get("created"),
        "input": f"{INPUT_NAME}: uint8 N x C x S x S, the image after `preprocess`; "
                 "mean/std normalisation is inside the graph",
        "output": f"{OUTPUT_NAME}: float N x K; softmax(logits / temperature + class_bias) = probabilities"
                  + (f"; {FEATURES_NAME}: float N x D, the head's input, scored with ood.safetensors"
                     if meta.get("ood") else ""),
    }
    return {key: json.dumps(value) for key, value in values.items()}


def onnx_bytes(module: Deployable, channels: int, size: int, opset: int = 17) -> bytes:
    """The ONNX graph of a Deployable for uint8 C x S x S inputs (dynamic batch), unchecked: what
    `export_onnx` writes, and what training times and evaluates its test split with."""
    example = torch.zeros(2, channels, size, size, dtype=torch.uint8)
    return _to_onnx_bytes(module.eval(), example, opset)


def _to_onnx_bytes(module: Deployable, example: torch.Tensor, opset: int) -> bytes:
    """The TorchScript exporter (dynamo=False): simple and reliable for these CNNs."""
    buffer = io.BytesIO()
    outputs = [OUTPUT_NAME, FEATURES_NAME] if module.feature_layer else [OUTPUT_NAME]
    with warnings.catch_warnings():  # the legacy exporter's deprecation; constant mean/std
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(module, (example,), buffer, input_names=[INPUT_NAME],
                          output_names=outputs, opset_version=opset, dynamo=False,
                          dynamic_axes={name: {0: "batch"} for name in [INPUT_NAME, *outputs]})
    return buffer.getvalue()


def check_images(run_dir: Path, meta: dict, *, seed: int = 0) -> np.ndarray:
    """Random uint8 inputs plus up to a few test-split images of the run, preprocessed."""
    preprocess = Preprocess.from_dict(meta["preprocess"])
    shape = (RANDOM_CHECK_IMAGES, preprocess.channels, preprocess.size, preprocess.size)
    images = [*np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)]
    root = Path(meta.get("data", {}).get("root", ""))
    run = RunFolder(run_dir)
    test_keys = run.read_split().test if run.split_file.is_file() else []
    for sample in map(Sample.from_key, test_keys[:DATA_CHECK_IMAGES]):
        try:
            images.append(preprocess(read_sample(root, sample)))
        except (ValueError, OSError):  # ImageReadError included: check what is readable
            continue
    return np.stack(images)


def parity(model: nn.Module, meta: dict, onnx_bytes: bytes, images: np.ndarray,
           detector=None) -> dict:
    """Max |prob difference| and argmax agreement of ONNX vs PyTorch on `images` (and, with a
    detector, the largest relative difference of their OOD scores)."""
    torch_clf = Classifier(model, meta, device="cpu", ood=detector)
    onnx_clf = Classifier(None, meta, ood=detector, onnx=OnnxBackend(onnx_bytes))
    torch_out, onnx_out = torch_clf.outputs_batch(images), onnx_clf.outputs_batch(images)
    torch_probs, onnx_probs = torch_clf.probabilities(torch_out.logits), onnx_clf.probabilities(onnx_out.logits)
    result = {"images": len(images),
              "max_abs_prob_diff": float(np.abs(torch_probs - onnx_probs).max()),
              "same_argmax": bool((torch_probs.argmax(1) == onnx_probs.argmax(1)).all())}
    if detector is not None:
        torch_scores, onnx_scores = torch_clf.ood_scores(torch_out), onnx_clf.ood_scores(onnx_out)
        result["max_rel_ood_score_diff"] = float((np.abs(torch_scores - onnx_scores) / torch_scores).max())
    return result


def export_onnx(run_dir: str | Path, *, opset: int = 17, check: bool = True) -> Path:
    """Write run_dir/model.onnx (dynamic batch, uint8 input, logits out) and return its path.

    With `check`, PyTorch and onnxruntime must agree (probabilities within 1e-4, same
    argmax) on random inputs and test images, else ExportError and nothing is written;
    the result is stored in the file's `parity` metadata."""
    import onnx

    run_dir = Path(run_dir)
    model, meta = load_bundle(run_dir, device="cpu")
    detector = load_detector(run_dir, meta)
    module = Deployable(model, meta["mean"], meta["std"], bool(meta.get("tta")),
                        detector.layer if detector is not None else None).eval()
    preprocess = Preprocess.from_dict(meta["preprocess"])
    proto = onnx.load_from_string(onnx_bytes(module, preprocess.channels, preprocess.size, opset))
    onnx.checker.check_model(proto)
    props = onnx_metadata(meta)
    if check:
        props["parity"] = json.dumps(_checked_parity(model, meta, proto, run_dir, detector))
    onnx.helper.set_model_props(proto, props)
    return write_atomic(RunFolder(run_dir).onnx_file, proto.SerializeToString())


def _checked_parity(model: nn.Module, meta: dict, proto, run_dir: Path, detector) -> dict:
    result = parity(model, meta, proto.SerializeToString(), check_images(run_dir, meta), detector)
    ood_off = result.get("max_rel_ood_score_diff", 0.0) > OOD_PARITY_TOLERANCE
    if result["max_abs_prob_diff"] > PARITY_TOLERANCE or not result["same_argmax"] or ood_off:
        raise ExportError(f"{run_dir}: ONNX disagrees with PyTorch ({result}); model.onnx was "
                          "not written. Try another --opset or report the model name.")
    return result
