"""ONNX export of a run folder, checked against PyTorch, and an onnxruntime backend.

`model.onnx` takes the *preprocessed* uint8 N x C x S x S batch (the bundle's `Preprocess`,
recorded in the file's metadata) and returns logits; the mean/std normalisation (and the
horizontal-flip average when the run uses TTA) is inside the graph, so every consumer feeds
the same uint8 pixels as `Classifier.predict_batch`. Softmax with the metadata's temperature
gives the calibrated probabilities.
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mediscan.bundle import META_FILE, load_bundle, read_meta
from mediscan.data.folders import Sample, read_sample
from mediscan.files import write_atomic
from mediscan.inference import batched_logits
from mediscan.predict import softmax
from mediscan.transforms import Preprocess, normalize

ONNX_FILE = "model.onnx"
PARITY_TOLERANCE = 1e-4
RANDOM_CHECK_IMAGES = 6
DATA_CHECK_IMAGES = 8
INPUT_NAME, OUTPUT_NAME = "image", "logits"


class ExportError(ValueError):
    """An export that failed or disagrees with PyTorch."""


class Deployable(nn.Module):
    """uint8 N x C x S x S -> logits: normalisation (and TTA) folded in front of the network."""

    def __init__(self, model: nn.Module, mean, std, tta: bool = False) -> None:
        super().__init__()
        self.model, self.mean, self.std, self.tta = model, tuple(mean), tuple(std), tta

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = normalize(images, self.mean, self.std)
        logits = self.model(x)
        if self.tta:
            logits = (logits + self.model(torch.flip(x, dims=[3]))) / 2
        return logits


class OnnxBackend:
    """onnxruntime session over a mediscan `model.onnx`: uint8 batches in, logits out."""

    def __init__(self, path: str | Path | bytes) -> None:
        import onnxruntime as ort

        if isinstance(path, (str, Path)) and not Path(path).is_file():
            raise FileNotFoundError(f"{path}: no ONNX model here; run `mediscan export RUN --onnx`")
        source = path if isinstance(path, bytes) else str(path)
        self.session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
        props = self.session.get_modelmeta().custom_metadata_map
        self.metadata: dict[str, Any] = {key: json.loads(value) for key, value in props.items()}
        if not isinstance(path, bytes):
            check_fresh(Path(path), self.metadata)

    def logits_batch(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Logits (float32 N x K) for preprocessed uint8 images N x C x S x S."""
        images = np.ascontiguousarray(images, dtype=np.uint8)
        chunks = [self.session.run([OUTPUT_NAME], {INPUT_NAME: images[i:i + batch_size]})[0]
                  for i in range(0, len(images), batch_size)]
        return np.concatenate(chunks) if chunks else np.zeros((0, 0), dtype=np.float32)


def check_fresh(path: Path, metadata: dict) -> None:
    """Refuse a model.onnx exported from an earlier bundle than the model.json beside it."""
    meta_file = path.parent / META_FILE
    if not meta_file.is_file():
        return
    created = read_meta(path.parent).get("created")
    if created != metadata.get("created"):
        raise ExportError(f"{path} was exported from an earlier model (created "
                          f"{metadata.get('created')}, the bundle now {created}); run "
                          f"`mediscan export {path.parent} --onnx` again")


def onnx_metadata(meta: dict) -> dict[str, str]:
    """What a consumer needs beside the graph, each value JSON-encoded."""
    values = {
        "model": meta["model"], "name": meta.get("name") or meta["model"],
        "classes": meta["classes"], "preprocess": meta["preprocess"], "mean": meta["mean"],
        "std": meta["std"], "temperature": float(meta["temperature"]),
        "tta": bool(meta.get("tta")), "created": meta.get("created"),
        "input": f"{INPUT_NAME}: uint8 N x C x S x S, the image after `preprocess`; "
                 "mean/std normalisation is inside the graph",
        "output": f"{OUTPUT_NAME}: float N x K; softmax(logits / temperature) = probabilities",
    }
    return {key: json.dumps(value) for key, value in values.items()}


def _to_onnx_bytes(module: Deployable, example: torch.Tensor, opset: int) -> bytes:
    """The TorchScript exporter (dynamo=False): simple and reliable for these CNNs."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # the legacy exporter's deprecation; constant mean/std
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(module, (example,), buffer, input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], opset_version=opset, dynamo=False,
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
    return buffer.getvalue()


def check_images(run_dir: Path, meta: dict, *, seed: int = 0) -> np.ndarray:
    """Random uint8 inputs plus up to a few test-split images of the run, preprocessed."""
    preprocess = Preprocess.from_dict(meta["preprocess"])
    shape = (RANDOM_CHECK_IMAGES, preprocess.channels, preprocess.size, preprocess.size)
    images = [*np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)]
    root = Path(meta.get("data", {}).get("root", ""))
    for sample in _test_samples(run_dir)[:DATA_CHECK_IMAGES]:
        try:
            images.append(preprocess(read_sample(root, sample)))
        except (ValueError, OSError):  # ImageReadError included: check what is readable
            continue
    return np.stack(images)


def _test_samples(run_dir: Path) -> list[Sample]:
    """The run's test split from split.json (keys 'class/file.png' or 'file#index')."""
    split_file = run_dir / "split.json"
    if not split_file.is_file():
        return []
    samples = []
    for key in json.loads(split_file.read_text()).get("test", []):
        name, _, index = key.partition("#")
        samples.append(Sample(Path(name), 0, index=int(index) if index.isdigit() else None))
    return samples


def parity(model: nn.Module, meta: dict, onnx_bytes: bytes, images: np.ndarray) -> dict:
    """Max |prob difference| and argmax agreement of ONNX vs PyTorch on `images`."""
    temperature = float(meta["temperature"])
    torch_probs = softmax(batched_logits(model, images, mean=meta["mean"], std=meta["std"],
                                         tta=bool(meta.get("tta"))), temperature)
    onnx_probs = softmax(OnnxBackend(onnx_bytes).logits_batch(images), temperature)
    return {"images": len(images),
            "max_abs_prob_diff": float(np.abs(torch_probs - onnx_probs).max()),
            "same_argmax": bool((torch_probs.argmax(1) == onnx_probs.argmax(1)).all())}


def export_onnx(run_dir: str | Path, *, opset: int = 17, check: bool = True) -> Path:
    """Write run_dir/model.onnx (dynamic batch, uint8 input, logits out) and return its path.

    With `check`, PyTorch and onnxruntime must agree (probabilities within 1e-4, same
    argmax) on random inputs and test images, else ExportError and nothing is written;
    the result is stored in the file's `parity` metadata."""
    import onnx

    run_dir = Path(run_dir)
    model, meta = load_bundle(run_dir, device="cpu")
    module = Deployable(model, meta["mean"], meta["std"], bool(meta.get("tta"))).eval()
    preprocess = Preprocess.from_dict(meta["preprocess"])
    example = torch.zeros(2, preprocess.channels, preprocess.size, preprocess.size, dtype=torch.uint8)
    proto = onnx.load_from_string(_to_onnx_bytes(module, example, opset))
    onnx.checker.check_model(proto)
    props = onnx_metadata(meta)
    if check:
        props["parity"] = json.dumps(_checked_parity(model, meta, proto, run_dir))
    onnx.helper.set_model_props(proto, props)
    return write_atomic(run_dir / ONNX_FILE, proto.SerializeToString())


def _checked_parity(model: nn.Module, meta: dict, proto, run_dir: Path) -> dict:
    result = parity(model, meta, proto.SerializeToString(), check_images(run_dir, meta))
    if result["max_abs_prob_diff"] > PARITY_TOLERANCE or not result["same_argmax"]:
        raise ExportError(f"{run_dir}: ONNX disagrees with PyTorch ({result}); model.onnx was "
                          "not written. Try another --opset or report the model name.")
    return result
