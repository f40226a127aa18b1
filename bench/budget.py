"""Does `--time-budget` hold for the whole `mediscan train` command on a large folder of small images?

    python bench/budget.py [--n 27558] [--budget 5m] [--data DIR] [--keep]
    taskset -c 0 python bench/budget.py           # one core: a machine about twice as slow
    python bench/budget.py --tiny-npz --budget 10m  # TissueMNIST's shape: 236,386 28-px images

Without `--data`, writes `--n` generated blood-cell-like JPEGs into a temporary folder, the
shape of the malaria cell set: colour cells of 50-64 px on black, half "parasitized" (a
dark-violet ring inside the cell), half "uninfected" (sometimes a pale spot, a platelet lying
on the cell). Then runs `mediscan train DATA --time-budget B --json` in a child process with an
empty decoding cache (a cold start, as a new user has it) and reports the whole command's wall
time against the budget (the overrun in %), the epochs, images seen, training seconds, test
accuracy and the child's peak memory. Prints the command, a table and one JSON line (`--json`:
the JSON line only). Never asserts on time.

`--tiny-npz` writes a MedMNIST-style .npz of TissueMNIST's shape instead (the largest 2-D
MedMNIST set: 165,466 / 23,640 / 47,280 grey 28-px images, 8 classes, each a noisy field with a
blob whose height gives the class): the shape where evaluating the official test split costs
most of a budget.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bench_common import announce, emit, log, machine, peak_rss_mib, scratch_dir, table

CLASSES = ("parasitized", "uninfected")
TISSUE_SHAPE = {"train": 165_466, "val": 23_640, "test": 47_280}  # TissueMNIST (MedMNIST v2)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=27558, help="Generated images (the malaria set has 27,558).")
    parser.add_argument("--budget", default="5m", help="`--time-budget` of the train command: 300, 300s, 5m.")
    parser.add_argument("--data", type=Path, help="Train on this folder instead of generated cells.")
    parser.add_argument("--tiny-npz", action="store_true",
                        help="Generate a TissueMNIST-shaped .npz (236,386 28-px images) instead of cells.")
    parser.add_argument("--recipe", help="`--recipe` of the train command (default: chosen for the device).")
    parser.add_argument("--keep", action="store_true", help="Keep the generated folder and the run.")
    parser.add_argument("--json", action="store_true", help="Print the JSON line only.")
    return parser.parse_args(argv)


def cell_image(rng: np.random.Generator, parasitized: bool) -> np.ndarray:
    """One stained red blood cell on black, uint8 HxWx3; a ring-stage parasite when `parasitized`."""
    size = int(rng.integers(50, 65))
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    cy, cx = size / 2 + rng.normal(0, 1.5, 2)
    ry, rx = size * rng.uniform(0.36, 0.47, 2)
    radius = np.sqrt(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2)
    colour = np.array([rng.uniform(190, 235), rng.uniform(110, 160), rng.uniform(140, 190)], np.float32)
    image = colour * (1.0 - 0.25 * radius[..., None] ** 2)  # paler centre, darker rim
    spot_y, spot_x = cy + rng.uniform(-0.5, 0.5) * ry, cx + rng.uniform(-0.5, 0.5) * rx
    spot = np.hypot(yy - spot_y, xx - spot_x)
    if parasitized:
        ring = np.abs(spot - rng.uniform(2.5, 4.5)) < 1.2
        image[ring] = (95, 40, 135) + rng.normal(0, 10, 3)
    elif rng.random() < 0.3:
        image[spot < rng.uniform(2, 4)] *= 1.15
    image += rng.normal(0, 5, image.shape)
    image[radius >= 1] = 0
    return np.clip(image, 0, 255).astype(np.uint8)


def write_cells(root: Path, n: int, seed: int = 0) -> Path:
    """`n` cell JPEGs in `root/<class>/`, the classes alternating."""
    rng = np.random.default_rng(seed)
    for name in CLASSES:
        (root / name).mkdir(parents=True, exist_ok=True)
    for k in range(n):
        label = k % 2
        Image.fromarray(cell_image(rng, label == 0)).save(root / CLASSES[label] / f"{k:06d}.jpg", quality=90)
    return root


def write_tiny_npz(path: Path, shape: dict[str, int] = TISSUE_SHAPE, seed: int = 0) -> Path:
    """A MedMNIST-style .npz of 28-px grey images in 8 classes: noise with a blob at a class height."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:28, :28]
    arrays = {}
    for split, n in shape.items():
        labels = rng.integers(0, 8, n)
        blob = 80 * np.exp(-((yy[None] - 6 - 2 * labels[:, None, None]) ** 2 + (xx[None] - 14) ** 2) / 20.0)
        arrays[f"{split}_images"] = np.clip(rng.normal(120, 30, (n, 28, 28)) + blob, 0, 255).astype(np.uint8)
        arrays[f"{split}_labels"] = labels[:, None].astype(np.uint8)
    np.savez_compressed(path, **arrays)
    return path


def train_command(data: Path, out: Path, budget: str, recipe: str | None) -> list[str]:
    command = [sys.executable, "-m", "mediscan", "train", str(data), "--time-budget", budget, "--out", str(out),
               "--json"]
    return command + (["--recipe", recipe] if recipe else [])


def timed_train(command: list[str], cache: Path) -> tuple[float, dict]:
    """Wall seconds of the whole child process and its JSON summary; exits with its error if it fails."""
    started = time.perf_counter()
    env = {**os.environ, "MEDISCAN_CACHE": str(cache)}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"the train command failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return seconds, json.loads(done.stdout)


def main(argv: list[str] | None = None) -> None:
    from mediscan.cli.common import parse_duration

    args = parse_args(argv)
    command = announce(args.json)
    budget = parse_duration(args.budget)
    with scratch_dir("mediscan-budget-", keep=args.keep) as work:
        data = args.data
        if args.tiny_npz:
            log(f"writing a TissueMNIST-shaped archive ({sum(TISSUE_SHAPE.values()):,} images)")
            data = write_tiny_npz(work / "tissue-shaped.npz")
        elif data is None:
            log(f"writing {args.n:,} cell images")
            data = write_cells(work / "cells", args.n)
        train = train_command(data, work / "run", args.budget, args.recipe)
        log("running " + " ".join(train[1:]))
        seconds, summary = timed_train(train, work / "cache")
    result = {
        "command": command, "machine": machine(), "data": _described(args),
        "budget_seconds": budget, "wall_seconds": round(seconds, 1),
        "overrun_percent": round(100 * (seconds / budget - 1), 1),
        "epochs": summary["epochs_run"], "images_seen": summary["images_seen"],
        "train_seconds": summary["train_seconds"], "test_accuracy": summary["test_accuracy"]["value"],
        "peak_rss_mib": round(peak_rss_mib(resource.RUSAGE_CHILDREN)),
    }
    rows = [[f"{budget:.0f}", f"{seconds:.1f}", f"{result['overrun_percent']:+.1f}", str(result["epochs"]),
             f"{result['images_seen']:,}", f"{result['train_seconds']:.0f}", f"{result['test_accuracy']:.3f}",
             str(result["peak_rss_mib"])]]
    text = table(["budget s", "whole command s", "overrun %", "epochs", "images seen", "training s",
                  "test acc", "peak RSS MiB"], rows)
    emit(result, json_only=args.json, text=text)


def _described(args: argparse.Namespace) -> str:
    if args.tiny_npz:
        return f"generated TissueMNIST-shaped .npz ({sum(TISSUE_SHAPE.values())} images)"
    return str(args.data or f"{args.n} generated cells")


if __name__ == "__main__":
    main()
