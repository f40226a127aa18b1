"""The one GPU check, for the day a GPU is lent: every GPU figure of the README in one command.

    python bench/gpu_check.py ../shared/datasets/brain-tumor-mri/Training --out /tmp/gpu_check

On one GPU, in order (each step a child process, its wall time measured):

1. `mediscan train DATA --recipe default`: the GPU recipe's own-split test accuracy and
   training seconds (target: >= 99.5% in under 15 s of training on an H100-class GPU);
2. `bench/train_speed.py DATA --recipes default`: ResNet-18 224 px training and inference
   images/s (target: >= 15,000 training images/s);
3. `mediscan compare DATA --models seed_cnn,vgg16,resnet18,resnet50,efficientnet_lite0,densenet121`
   at `--compare-epochs` epochs each: the six-architecture table;
4. `bench/sources.py` on the run of step 1: BraTS sensitivity per contrast and specificity.

Prints the command, each step's figures, a Markdown table for the README's GPU section and one
JSON line. Refuses to run without CUDA (the figures would be CPU figures).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from bench_common import announce, emit, log, machine

BENCH = Path(__file__).resolve().parent
SIX = "seed_cnn,vgg16,resnet18,resnet50,efficientnet_lite0,densenet121"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="The brain Training folder (or a copy of it).")
    parser.add_argument("--out", type=Path, default=Path("gpu_check"), help="Where the runs go.")
    parser.add_argument("--compare-epochs", type=int, default=3, help="Epochs per compared model.")
    parser.add_argument("--skip", default="", help="Comma-separated steps to leave out: "
                                                   "train,speed,compare,sources.")
    parser.add_argument("--json", action="store_true", help="Print the JSON line only.")
    return parser.parse_args(argv)


def last_json(stdout: str):
    """The last line of a child's output that parses as JSON."""
    for line in reversed(stdout.strip().splitlines()):
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            continue
    raise ValueError("the step printed no JSON line")


def step(name: str, command: list[str]) -> dict:
    """Run one step; its JSON result and wall seconds (a failed step is reported, not fatal)."""
    log(f"{name}: {' '.join(command)}")
    began = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - began
    if done.returncode != 0:
        return {"command": command, "seconds": seconds, "error": done.stderr.strip()[-2000:]}
    return {"command": command, "seconds": seconds, "result": last_json(done.stdout)}


def steps(args: argparse.Namespace) -> dict[str, list[str]]:
    """The command of every step."""
    mediscan = [sys.executable, "-m", "mediscan"]
    run = str(args.out / "default")
    return {
        "train": [*mediscan, "train", str(args.data), "--recipe", "default", "--out", run, "--json",
                  "--no-progress"],
        "speed": [sys.executable, str(BENCH / "train_speed.py"), str(args.data), "--recipes", "default",
                  "--epochs", "2", "--device", "cuda", "--json"],
        "compare": [*mediscan, "compare", str(args.data), "--models", SIX, "--epochs",
                    str(args.compare_epochs), "--out", str(args.out / "compare"), "--json", "--no-progress"],
        "sources": [sys.executable, str(BENCH / "sources.py"), run, "--device", "cuda", "--json"],
    }


def markdown(results: dict) -> str:
    """The README's GPU table."""
    rows = ["| what | figure |", "| --- | --- |"]
    train = results.get("train", {}).get("result")
    if train:
        acc = train.get("test_accuracy") or {}
        rows.append(f"| default recipe, own test split | {100 * acc.get('value', float('nan')):.2f}% in "
                    f"{train['train_seconds']:.0f} s of training, {train.get('epochs_run')} epochs, "
                    f"{train.get('images_seen'):,} images seen |")
    speed = results.get("speed", {}).get("result")
    if speed:
        for row in speed.get("recipes", []):
            rows.append(f"| {row.get('recipe')} images/s | training {row.get('train_images_per_second')}, "
                        f"inference {row.get('inference_images_per_second')} |")
    compare = results.get("compare", {}).get("result")
    if compare:
        for row in compare.get("rows", []):
            rows.append(f"| compare: {row['name']} | accuracy {100 * row['accuracy']['value']:.1f}%, "
                        f"{row['train_seconds']:.0f} s |")
    sources = results.get("sources", {}).get("result")
    if sources:
        for contrast, row in sources["runs"][0]["contrasts"].items():
            rows.append(f"| BraTS {contrast} | sensitivity (>= 1,500 px) "
                        f"{100 * row['sensitivity_large']['value']:.1f}%, specificity "
                        f"{100 * row['specificity']['value']:.1f}% |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    import torch

    args = parse_args(argv)
    command = announce(args.json)
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this check measures GPU figures; run it on the GPU machine")
    skip = {s for s in args.skip.split(",") if s}
    results = {name: step(name, cmd) for name, cmd in steps(args).items() if name not in skip}
    emit({"command": command, "machine": machine(), "steps": results}, json_only=args.json,
         text=markdown(results))


if __name__ == "__main__":
    main()
