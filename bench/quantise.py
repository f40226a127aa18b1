"""int8 ONNX models of a run: how much faster on the CPU, and what accuracy they cost.

    python bench/quantise.py RUN [--n 512] [--calibration 256] [--batch 64]
    taskset -c 0 python bench/quantise.py RUN      # one core: a slower machine

Exports `model.onnx` when it is missing (`mediscan export RUN --onnx`), then writes two int8
versions into a temporary folder with ONNX Runtime's quantisation tools:

- dynamic: weights int8, activations quantised on the fly (`quantize_dynamic`);
- static: weights int8 per channel, activations uint8 with ranges calibrated on `--calibration`
  images of the run's own training split (`quantize_static`, QDQ format, min-max).

Each model runs on up to `--n` images of the run's test split (split.json, decoded with the
recorded preprocessing) in batches of `--batch`: images/s (best of `--repeats` passes after a
warm-up), test accuracy, the largest difference of the softmax probabilities to the fp32 model
and how many top classes differ. Prints the command, a table and one JSON line (`--json`: the
JSON line only). Never asserts on time.
"""

from __future__ import annotations

import argparse
import logging
from functools import partial
from pathlib import Path

import numpy as np

from bench_common import announce, emit, log, machine, scratch_dir, table


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="Run folder written by `mediscan train`.")
    parser.add_argument("--n", type=int, default=512, help="Test images to score.")
    parser.add_argument("--calibration", type=int, default=256, help="Training images for the static ranges.")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="Print the JSON line only.")
    return parser.parse_args(argv)


class Calibration:
    """ONNX Runtime's calibration reader over uint8 training images, one batch at a time."""

    def __init__(self, images: np.ndarray, batch: int) -> None:
        self.batches = iter([images[i:i + batch] for i in range(0, len(images), batch)])

    def get_next(self) -> dict | None:
        from mediscan.onnx_backend import INPUT_NAME

        batch = next(self.batches, None)
        return None if batch is None else {INPUT_NAME: np.ascontiguousarray(batch)}


def quantised_models(source: Path, work: Path, calibration: np.ndarray, batch: int) -> dict[str, Path]:
    """{"dynamic": path, "static": path}: int8 versions of `source` written into `work`."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    logging.getLogger().setLevel(logging.ERROR)  # the quantiser warns about every op it leaves in float
    prepared = work / "prepared.onnx"
    quant_pre_process(str(source), str(prepared))
    paths = {"dynamic": work / "dynamic.onnx", "static": work / "static.onnx"}
    quantize_dynamic(str(prepared), str(paths["dynamic"]), weight_type=QuantType.QInt8)
    quantize_static(str(prepared), str(paths["static"]), Calibration(calibration, batch),
                    quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8)
    return paths


def measured(model: Path, images: np.ndarray, batch: int, repeats: int) -> tuple[float, np.ndarray]:
    """(best images/s over `repeats` passes, logits): the path `Classifier` takes with the ONNX backend."""
    from mediscan.forward import images_per_second
    from mediscan.onnx_backend import OnnxBackend

    logits_of = partial(OnnxBackend(model.read_bytes()).logits_batch, batch_size=batch)
    logits = logits_of(images)
    return images_per_second(logits_of, images, batch_size=len(images), repeats=repeats), logits


def main(argv: list[str] | None = None) -> None:
    from mediscan.data.prepare import load_run_data
    from mediscan.evaluation.calibration import apply_temperature
    from mediscan.export import export_onnx
    from mediscan.run_folder import RunFolder

    args = parse_args(argv)
    command = announce(args.json)
    run = RunFolder(args.run)
    if not run.onnx_file.is_file():
        log(f"exporting {run.onnx_file}")
        export_onnx(args.run)
    prepared = load_run_data(args.run, run.read_meta(), progress=False)
    test = np.sort(prepared.indices["test"])[:args.n]
    train = np.random.default_rng(0).permutation(prepared.indices["train"])[:args.calibration]
    images, labels = np.asarray(prepared.decoded.images[test]), prepared.folder.labels[test]
    rows = {}
    with scratch_dir("mediscan-int8-") as work:
        log(f"quantising with {len(train)} calibration images")
        models = {"fp32": run.onnx_file, **quantised_models(run.onnx_file, work, np.asarray(
            prepared.decoded.images[np.sort(train)]), args.batch)}
        reference = None
        for name, path in models.items():
            log(f"{name}: {len(images)} test images")
            rate, logits = measured(path, images, args.batch, args.repeats)
            probs = apply_temperature(logits)
            reference = probs if reference is None else reference
            rows[name] = {"images_per_second": rate, "megabytes": path.stat().st_size / 2**20,
                          "test_accuracy": float((probs.argmax(1) == labels).mean()),
                          "max_abs_probability_difference": float(np.abs(probs - reference).max()),
                          "top_class_differs": int((probs.argmax(1) != reference.argmax(1)).sum())}
    result = {"command": command, "run": args.run, "images": len(images), "batch": args.batch,
              "models": rows, "machine": machine()}
    text = table(["model", "images/s", "x fp32", "MB", "test acc", "max |p - p_fp32|", "top class differs"],
                 [[name, f"{r['images_per_second']:.1f}",
                   f"{r['images_per_second'] / rows['fp32']['images_per_second']:.2f}", f"{r['megabytes']:.1f}",
                   f"{r['test_accuracy']:.4f}", f"{r['max_abs_probability_difference']:.3f}",
                   str(r["top_class_differs"])] for name, r in rows.items()])
    emit(result, json_only=args.json, text=text)


if __name__ == "__main__":
    main()
