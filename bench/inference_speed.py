"""CPU (or GPU) inference speed through `Classifier`, torch and ONNX Runtime backends side by side.

    python bench/inference_speed.py RUN [--n 256] [--batch 64]
    taskset -c 0 python bench/inference_speed.py RUN     # one core: a slower machine

Takes up to `--n` images of the run's own test split (split.json, decoded with the run's
recorded preprocessing), exports `model.onnx` when it is missing (`mediscan export RUN --onnx`
does the same), then for each backend times `Classifier.predict_batch` over the images in
batches of `--batch`: one warm-up pass, then the best of `--repeats` timed passes. Reports
images/s, the largest probability difference to the torch backend and how many top classes
differ. Both libraries use their default thread counts (every core this process may use).
Prints the command, a table and one JSON line (`--json`: the JSON line only). Never asserts on
time.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from bench_common import announce, emit, log, machine, table


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="Run folder written by `mediscan train`.")
    parser.add_argument("--n", type=int, default=256, help="Test images to push through.")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", action="store_true", help="Print the JSON line only.")
    return parser.parse_args(argv)


def throughput(classifier, images: np.ndarray, batch: int, repeats: int) -> tuple[float, np.ndarray]:
    """Best-of-`repeats` images/s of `predict_batch` over the images in batches (after a whole
    warm-up pass, whose probabilities are returned)."""
    from mediscan.forward import images_per_second

    def one_pass(sample: np.ndarray) -> np.ndarray:
        return np.concatenate([classifier.predict_batch(sample[i:i + batch])
                               for i in range(0, len(sample), batch)])

    probs = one_pass(images)
    rate = images_per_second(one_pass, images, device=classifier.device or "cpu", batch_size=len(images),
                             repeats=repeats)
    return rate, probs


def load_backends(run: Path, device: str) -> dict:
    """{"torch": Classifier, "onnx": Classifier}, exporting model.onnx first if it is missing."""
    from mediscan.export import export_onnx
    from mediscan.predict import Classifier
    from mediscan.run_folder import RunFolder

    if not RunFolder(run).onnx_file.is_file():
        log(f"exporting {run}/model.onnx")
        export_onnx(run)
    return {"torch": Classifier.load(run, device=device), "onnx": Classifier.load(run, backend="onnx")}


def main(argv: list[str] | None = None) -> None:
    from mediscan.evaluation.robustness import test_images as run_test_images

    args = parse_args(argv)
    command = announce(args.json)
    backends = load_backends(args.run, args.device)
    images = run_test_images(args.run, backends["torch"].meta, None, progress=False)[0][:args.n]
    rows, reference = {}, None
    for name, classifier in backends.items():
        log(f"{name}: {len(images)} images in batches of {args.batch}")
        rate, probs = throughput(classifier, images, args.batch, args.repeats)
        reference = probs if reference is None else reference
        rows[name] = {"images_per_second": rate,
                      "max_abs_probability_difference": float(np.abs(probs - reference).max()),
                      "top_class_differs": int((probs.argmax(1) != reference.argmax(1)).sum())}
    result = {"command": command, "run": args.run, "images": len(images), "batch": args.batch,
              "backends": rows, "machine": machine()}
    text = table(["backend", "images/s", "max |p - p_torch|", "top class differs"],
                 [[name, f"{r['images_per_second']:.1f}", f"{r['max_abs_probability_difference']:.2e}",
                   str(r["top_class_differs"])] for name, r in rows.items()])
    emit(result, json_only=args.json, text=text)


if __name__ == "__main__":
    main()
