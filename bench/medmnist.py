"""Train on a MedMNIST .npz with its official splits and print test ACC/AUC beside the paper's baselines.

    python bench/medmnist.py ../shared/datasets/pneumoniamnist.npz --time-budget 10m [--recipe default]

The set is recognised from the file name (pneumoniamnist.npz, pneumoniamnist_224.npz, ...). Training
goes through the normal `train` API (the recipe's preprocessing chosen from the data, the archive's
train/val/test splits used as given); the figures are the run's metrics.json (test split).

PAPER holds the test figures (AUC, ACC) of MedMNIST v2 Table 3: J. Yang, R. Shi, D. Wei, Z. Liu,
L. Zhao, B. Ke, H. Pfister, B. Ni, "MedMNIST v2 - A large-scale lightweight benchmark for 2D and 3D
biomedical image classification", Scientific Data 10:41 (2023), doi:10.1038/s41597-022-01721-8.
The values were taken from copies of that table found by search (the full rows for PathMNIST,
OCTMNIST, TissueMNIST, OrganAMNIST and PneumoniaMNIST; single rows of the others) and agree
wherever two copies overlap. A figure that could not be found is left out (None), never guessed.
ChestMNIST is multi-label: mediscan refuses it, the row is kept for reference.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

from bench_common import command_line, machine, table

METHODS = ("ResNet-18 (28)", "ResNet-18 (224)", "ResNet-50 (28)", "ResNet-50 (224)", "auto-sklearn",
           "AutoKeras", "Google AutoML Vision")
Figures = tuple[float | None, float | None]  # (AUC, ACC) on the test split


def _row(*pairs: Figures | None) -> dict[str, Figures]:
    return {method: pair for method, pair in zip(METHODS, pairs) if pair is not None}


PAPER: dict[str, dict[str, Figures]] = {
    "pathmnist": _row((0.983, 0.907), (0.989, 0.909), (0.990, 0.911), (0.989, 0.892), (0.934, 0.716),
                      (0.959, 0.834), (0.944, 0.728)),
    "chestmnist": _row((0.768, 0.947), (0.773, 0.947), None, (0.773, 0.948), (0.649, 0.779),
                       (0.742, 0.937), (0.778, 0.948)),
    "dermamnist": _row((0.917, 0.735), (0.920, 0.754), (0.913, 0.735), (0.912, 0.731)),
    "octmnist": _row((0.943, 0.743), (0.958, 0.763), (0.952, 0.762), (0.958, 0.776), (0.887, 0.601),
                     (0.955, 0.763), (0.963, 0.771)),
    "pneumoniamnist": _row((0.944, 0.854), (0.956, 0.864), (0.948, 0.854), (0.962, 0.884), (0.942, 0.855),
                           (0.947, 0.878), (0.991, 0.946)),
    "retinamnist": _row((0.717, 0.524)),
    "breastmnist": _row((0.901, 0.863), None, (0.857, 0.812)),
    "bloodmnist": _row((0.998, 0.958)),
    "tissuemnist": _row((0.930, 0.676), (0.933, 0.681), (0.931, 0.680), (0.932, 0.680), (0.828, 0.532),
                        (0.941, 0.703), (0.924, 0.673)),
    "organamnist": _row((0.997, 0.935), (0.998, 0.951), (0.997, 0.935), (0.998, 0.947), (0.963, 0.762),
                        (0.994, 0.905), (0.990, 0.886)),
    "organcmnist": _row((0.992, 0.900)),
    "organsmnist": _row((0.972, 0.782)),
}
CITATION = "MedMNIST v2 (Yang et al., Scientific Data 10:41, 2023), Table 3, test split"


def recognise(path: Path) -> str | None:
    """The MedMNIST set a file name stands for ("pneumoniamnist_224.npz" -> "pneumoniamnist")."""
    stem = re.sub(r"[_-]?\d+$", "", path.stem.lower())
    return stem if stem in PAPER else None


def parse_budget(text: str) -> float:
    """'10m', '90s', '1h' or plain seconds -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if not match:
        raise SystemExit(f"--time-budget {text!r}: give seconds or a number with s, m or h (e.g. 10m)")
    return float(match[1]) * {"": 1, "s": 1, "m": 60, "h": 3600}[match[2]]


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def render(result: dict) -> str:
    """The comparison table: mediscan's run first, then the paper's methods."""
    rows = [["mediscan " + result["recipe"], _fmt(result["accuracy"]), _fmt(result["auc"]),
             f"{result['epochs']} epochs, {result['seconds']:.0f} s"]]
    for method, (auc, acc) in PAPER.get(result["set"] or "", {}).items():
        rows.append([method, _fmt(acc), _fmt(auc), "paper"])
    title = f"{result['set'] or result['data']}: test split ({result['test_images']} images)"
    note = CITATION if result["set"] else "file name not recognised: no paper figures to compare with"
    return f"{title}\n{table(['method', 'ACC', 'AUC', 'notes'], rows)}\n{note}"


def run(args: argparse.Namespace) -> dict:
    """Train with the official splits and collect the test figures."""
    from mediscan.run_folder import RunFolder, new_run_folder
    from mediscan.training.trainer import train

    started = time.perf_counter()
    given = (("epochs", args.epochs), ("input_size", args.input_size), ("seed", args.seed), ("ema", args.ema),
             ("lr", args.lr), ("model", args.model))
    overrides = {k: v for k, v in given if v is not None}
    out = args.out or new_run_folder(f"medmnist-{args.npz.stem}-")
    run_dir = train(args.npz, recipe=args.recipe, out=out, device=args.device, progress=not args.json,
                    workers=args.workers, time_budget=parse_budget(args.time_budget), **overrides)
    run = RunFolder(run_dir)
    test = run.read_metrics()["test"]
    epochs = len(run.read_history())
    recipe = run.read_meta()["recipe"]["name"]
    return {"data": str(args.npz), "set": recognise(args.npz), "recipe": recipe, "run": str(run_dir),
            "accuracy": test["accuracy"], "auc": test["macro_auc"], "test_images": test["n"],
            "epochs": epochs, "seconds": time.perf_counter() - started, "time_budget": args.time_budget,
            "paper": PAPER.get(recognise(args.npz) or "", {}), "citation": CITATION,
            "command": command_line(), "machine": machine()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("npz", type=Path, help="A MedMNIST .npz (train/val/test arrays).")
    parser.add_argument("--time-budget", default="10m", help="Training budget, e.g. 10m (default).")
    parser.add_argument("--recipe", default=None,
                        help="A mediscan recipe (default: the one `mediscan train` picks for the device).")
    parser.add_argument("--model", help="A registered model instead of the recipe's (see `mediscan models`).")
    parser.add_argument("--epochs", type=int, help="Override the recipe's epochs.")
    parser.add_argument("--input-size", type=int, help="Override the recipe's input size.")
    parser.add_argument("--seed", type=int, help="Random seed instead of the recipe's.")
    parser.add_argument("--lr", type=float, help="Peak learning rate instead of the recipe's.")
    parser.add_argument("--ema", type=float, help="Weight-average decay instead of the recipe's (0: off).")
    parser.add_argument("--device", help="cpu, cuda, mps (default: best available).")
    parser.add_argument("--workers", type=int, help="Decoding processes.")
    parser.add_argument("--out", type=Path, help="Run folder (default runs/medmnist-<set>-<time>).")
    parser.add_argument("--json", action="store_true", help="Print only the JSON line.")
    args = parser.parse_args(argv)
    try:
        result = run(args)
    except ValueError as error:  # unreadable archive, multi-label labels: the message says what to do
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    if not args.json:
        print(f"command: {result['command']}")
        print(render(result))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
