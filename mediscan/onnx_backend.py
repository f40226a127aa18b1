"""The onnxruntime backend of `Classifier`: a mediscan `model.onnx` run on uint8 batches.

`model.onnx` takes the *preprocessed* uint8 N x C x S x S batch and returns logits (and, when the
bundle has out-of-distribution statistics, the head's input `features`); normalisation and
test-time augmentation are inside the graph (`export.export_onnx` writes it).

One session with one thread per run, and the batch's cache-sized chunks spread over as many
threads as this process may use: ONNX Runtime's own two-thread pool ran EfficientNet-Lite0 at
128 px at 435-465 images/s in most processes on 2 cores but at 255-290 in a third of them (as
slow as one thread), while two single-thread runs side by side gave 486-515 in every process."""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from mediscan.forward import Outputs, inference_batch_size
from mediscan.run_folder import RunFolder

INPUT_NAME, OUTPUT_NAME, FEATURES_NAME = "image", "logits", "features"


def usable_cpus() -> int:
    """The CPUs this process may run on: its affinity where the OS keeps one (taskset), else all."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class ExportError(ValueError):
    """An export that failed, disagrees with PyTorch, or is older than its bundle."""


class OnnxBackend:
    """onnxruntime session over a mediscan `model.onnx`: uint8 batches in, logits out."""

    def __init__(self, path: str | Path | bytes) -> None:
        import onnxruntime as ort

        if isinstance(path, (str, Path)) and not Path(path).is_file():
            raise FileNotFoundError(f"{path}: no ONNX model here; run `mediscan export RUN --onnx`")
        source = path if isinstance(path, bytes) else str(path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # parallel over chunks instead (module docstring)
        self.session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        self.threads = ThreadPoolExecutor(max_workers=usable_cpus(), thread_name_prefix="onnx")
        props = self.session.get_modelmeta().custom_metadata_map
        self.metadata: dict[str, Any] = {key: _json_or_text(value) for key, value in props.items()}
        if not isinstance(path, bytes):
            check_fresh(Path(path), self.metadata)

    def outputs_batch(self, images: np.ndarray, batch_size: int | None = None) -> Outputs:
        """Logits (float32 N x K), and features if the graph has them, for uint8 N x C x S x S
        (`batch_size` None: `inference_batch_size` on the CPU for the image size)."""
        images = np.ascontiguousarray(images, dtype=np.uint8)
        batch_size = batch_size or inference_batch_size("cpu", images.shape[-1])
        names = [o.name for o in self.session.get_outputs() if o.name in (OUTPUT_NAME, FEATURES_NAME)]
        chunks = list(self.threads.map(lambda i: self.session.run(names, {INPUT_NAME: images[i:i + batch_size]}),
                                       range(0, len(images), batch_size)))
        if not chunks:
            return Outputs(np.zeros((0, 0), dtype=np.float32))
        columns = {name: np.concatenate([chunk[j] for chunk in chunks]) for j, name in enumerate(names)}
        return Outputs(columns[OUTPUT_NAME], columns.get(FEATURES_NAME))

    def logits_batch(self, images: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """Logits (float32 N x K) for preprocessed uint8 images N x C x S x S."""
        return self.outputs_batch(images, batch_size).logits


def _json_or_text(value: str) -> Any:
    """A metadata value: mediscan writes JSON; other tools (ONNX Runtime's quantiser) add plain text."""
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def check_fresh(path: Path, metadata: dict) -> None:
    """Refuse a model.onnx exported from an earlier bundle than the model.json beside it."""
    run = RunFolder(path.parent)
    if not run.meta_file.is_file():
        return
    created = run.read_meta().get("created")
    if created != metadata.get("created"):
        raise ExportError(f"{path} was exported from an earlier model (created "
                          f"{metadata.get('created')}, the bundle now {created}); run "
                          f"`mediscan export {path.parent} --onnx` again")
