"""Training and inference speed of named recipes, side by side, through `mediscan.training.train`.

    python bench/train_speed.py DATA --recipes default,tutorial-cnn,cpu --epochs 5
    python bench/train_speed.py DATA --recipes demo,tutorial-cnn --epochs 2 --max-images 400

Each recipe trains in its own child process (so its peak memory is its own) into a temporary
run folder, on the split of the first recipe (`--own-splits` to let each recipe split), with a
fresh decoding cache (so the first run decodes cold). Per recipe it reports:

- train images/s: `train_images_per_second` from model.json (images seen / seconds spent in
  training epochs; validation excluded);
- inference images/s: `mediscan.forward.images_per_second` on the run's test split;
- time to the target validation accuracy: `seconds` of the first history.csv row whose val_acc
  reaches `--target-acc` (wall time since the first training step, validation included;
  decoding and model building excluded);
- test accuracy with its 95% bootstrap CI (metrics.json);
- peak host RSS of the child (`getrusage`; decoding workers listed apart) and peak CUDA memory;
- second-run start: after training, the time a new run on the same data spends before its first
  training step with the cache warm: `prepare_data` (scan, content hashing, cache hit, split)
  + building the model + `image_source`. Interpreter start and imports are measured apart
  (`python -c "import mediscan.training.trainer"`).

Prints the command line, a table and one JSON line (`--json`: the JSON line only). Never
asserts on time.
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
from bench_common import MIB, announce, emit, fmt, fmt_ci, log, machine, peak_rss_mib, scratch_dir, table

CHILD_FLAG = "--child-recipe"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (the child options are hidden)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="Data folder (any layout `mediscan train` reads).")
    parser.add_argument("--recipes", default="default,tutorial-cnn,cpu", help="Comma-separated.")
    parser.add_argument("--epochs", type=int, default=None, help="Override every recipe's epochs.")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: the best there is).")
    parser.add_argument("--target-acc", type=float, default=0.95, help="Validation accuracy to time.")
    parser.add_argument("--max-images", type=int, default=None,
                        help="Train on a stratified subsample of this many images (symlinks).")
    parser.add_argument("--workers", type=int, default=None, help="Decoding processes.")
    parser.add_argument("--own-splits", action="store_true",
                        help="Let each recipe make its own split (default: all use the first one's).")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="Decoding cache (default: a fresh temporary one, so run 1 decodes cold).")
    parser.add_argument("--dir", type=Path, default=None, help="Where the temporary folder goes.")
    parser.add_argument("--keep", action="store_true", help="Keep the temporary run folders.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the --max-images subsample.")
    parser.add_argument("--json", action="store_true", help="Print the JSON line only.")
    parser.add_argument(CHILD_FLAG, dest="child_recipe", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-out", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-split", type=Path, default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# ------------------------------------------------------------------------------- the data
def subsample(data: Path, n: int, out: Path, seed: int) -> Path:
    """A class-stratified subsample of `n` images of DATA as a folder of symlinks `out/<class>/`."""
    from mediscan.data.folders import scan_folder

    folder = scan_folder(data)
    if any(s.index is not None for s in folder.samples):
        raise SystemExit(f"{data}: --max-images needs image files (not an .npz or volumes)")
    rng = np.random.default_rng(seed)
    labels = folder.labels
    share = min(1.0, n / max(1, len(labels)))
    for k, name in enumerate(folder.classes):
        members = np.flatnonzero(labels == k)
        take = rng.permutation(members)[: max(2, round(share * len(members)))]
        (out / name).mkdir(parents=True, exist_ok=True)
        for i in take:
            sample = folder.samples[i]
            link = out / name / sample.key.replace("/", "__").replace("#", "_")
            link.symlink_to((folder.root / sample.path).resolve())
    return out


# ----------------------------------------------------------------------- one recipe (child)
def read_history(run: Path) -> list[dict]:
    """history.csv as a list of dicts with float values."""
    from mediscan.run_folder import RunFolder

    return [{k: float(v) for k, v in row.items()} for row in RunFolder(run).read_history()]


def time_to_target(history: list[dict], target: float) -> dict:
    """Seconds and epoch of the first epoch whose val_acc reaches `target` (None if never)."""
    best = max((row["val_acc"] for row in history), default=None)
    for row in history:
        if row["val_acc"] >= target:
            return {"seconds": row["seconds"], "epoch": int(row["epoch"]), "best_val_acc": best}
    return {"seconds": None, "epoch": None, "best_val_acc": best}


def second_run_start(data: Path, recipe, cache_dir: Path | None, device, workers) -> dict:
    """Time a new run on the same data spends before its first training step (warm cache)."""
    from mediscan.data.prepare import prepare_data
    from mediscan.models import create_model
    from mediscan.training.loop import image_source

    started = time.perf_counter()
    prepared = prepare_data(data, recipe, workers=workers, progress=False, cache_dir=cache_dir)
    prepared_at = time.perf_counter()
    model = create_model(recipe.model, len(prepared.folder.classes), pretrained=recipe.pretrained)
    model.to(device)
    image_source(prepared.decoded.images, prepared.indices["train"], device)
    return {"seconds": time.perf_counter() - started, "prepare_data_seconds": prepared_at - started,
            "cache_hit": bool(prepared.decoded.cache_hit)}


def inference_speed(run: Path, data: Path, recipe, cache_dir: Path | None, device, workers) -> float:
    """`images_per_second` of the trained model on its test split (decoded from the warm cache)."""
    from mediscan.data.prepare import prepare_data
    from mediscan.forward import images_per_second
    from mediscan.predict import Classifier
    from mediscan.run_folder import RunFolder

    split_file = RunFolder(run).split_file
    prepared = prepare_data(data, recipe, split_file=split_file, workers=workers,
                            progress=False, cache_dir=cache_dir)
    test = np.sort(prepared.indices["test"])
    classifier = Classifier.load(run, device=device)
    return images_per_second(classifier.logits_batch, prepared.decoded.images[test], device=device)


def run_recipe(name: str, args: argparse.Namespace) -> dict:
    """Train one recipe and measure it; the child process's whole job."""
    import torch

    from mediscan.forward import pick_device
    from mediscan.run_folder import RunFolder
    from mediscan.training.trainer import resolve_recipe, train

    device = pick_device(args.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    run = train(args.data, recipe=name, out=args.child_out, device=str(device), progress=False,
                workers=args.workers, cache_dir=args.cache_dir, split_from=args.child_split,
                epochs=args.epochs)
    total = time.perf_counter() - started
    meta = RunFolder(run).read_meta()
    metrics = RunFolder(run).read_metrics()["test"]
    history = read_history(run)
    recipe = resolve_recipe(name, epochs=args.epochs)
    restart = second_run_start(args.data, recipe, args.cache_dir, device, args.workers)
    infer = inference_speed(run, args.data, recipe, args.cache_dir, device, args.workers)
    return {
        "recipe": name, "model": meta["model"], "input_size": meta["input_size"],
        "epochs": len(history), "params": meta["params"],
        "images": {split: sum(counts.values()) for split, counts in meta["data"]["counts"].items()},
        "train_images_per_second": meta["train_images_per_second"],
        "inference_images_per_second": round(infer, 1),
        "target_acc": args.target_acc, "time_to_target": time_to_target(history, args.target_acc),
        "train_seconds": meta["train_seconds"], "total_seconds": round(total, 2),
        "test_accuracy": metrics["headline"]["accuracy"],
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "peak_rss_decode_workers_mib": round(peak_rss_mib(resource.RUSAGE_CHILDREN), 1),
        "peak_gpu_mib": round(torch.cuda.max_memory_allocated(device) / MIB, 1)
        if device.type == "cuda" else None,
        "second_run_start": restart, "device": str(device),
    }


# ------------------------------------------------------------------------------- parent
def child_command(name: str, args: argparse.Namespace, data: Path, out: Path, cache: Path,
                  split: Path | None) -> list[str]:
    """The command line of the child process that trains one recipe."""
    command = [sys.executable, __file__, str(data), CHILD_FLAG, name, "--child-out", str(out),
               "--cache-dir", str(cache), "--target-acc", str(args.target_acc)]
    for flag, value in (("--epochs", args.epochs), ("--device", args.device),
                        ("--workers", args.workers), ("--child-split", split)):
        if value is not None:
            command += [flag, str(value)]
    return command


def spawn(command: list[str], cache: Path) -> dict:
    """Run a child; its last stdout line is its JSON result, its stderr passes through.

    MEDISCAN_CACHE points at the benchmark's cache, so the duplicate hashes start cold too."""
    env = {**os.environ, "MEDISCAN_CACHE": str(cache), "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, env=env)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise SystemExit(f"child failed (exit {done.returncode}): {' '.join(command)}")
    return json.loads(lines[-1])


def import_seconds() -> float:
    """Seconds for a fresh interpreter to import the trainer (the part of a restart not timed in-process)."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import mediscan.training.trainer"], check=True)
    return time.perf_counter() - started


def render(rows: list[dict], target: float, imports: float) -> str:
    """The side-by-side table and its notes."""
    columns = ["recipe", "model", "px", "epochs", "train img/s", "infer img/s",
               f"s to val>={target:g}", "fit s", "total s", "test acc % (95% CI)",
               "peak RSS MiB", "peak GPU MiB", "2nd-run start s"]
    body = []
    for r in rows:
        reach = r["time_to_target"]
        reached = fmt(reach["seconds"]) if reach["seconds"] is not None else \
            f"not reached (best {fmt(reach['best_val_acc'], '.3f')})"
        body.append([r["recipe"], r["model"], str(r["input_size"]), str(r["epochs"]),
                     fmt(r["train_images_per_second"]), fmt(r["inference_images_per_second"]),
                     reached, fmt(r["train_seconds"]), fmt(r["total_seconds"]),
                     fmt_ci(r["test_accuracy"]), fmt(r["peak_rss_mib"], ".0f"),
                     fmt(r["peak_gpu_mib"], ".0f"), fmt(r["second_run_start"]["seconds"], ".2f")])
    notes = (f"2nd-run start: prepare_data on the warm cache + model build + image_source, in "
             f"process; a fresh interpreter adds {imports:.1f} s of imports.")
    return table(columns, body) + "\n" + notes


def run_all(args: argparse.Namespace, work: Path, command: str) -> dict:
    """Every recipe in its own child, on one split unless --own-splits."""
    from mediscan.run_folder import RunFolder

    data = subsample(args.data, args.max_images, work / "data", args.seed) \
        if args.max_images else args.data
    cache = args.cache_dir or work / "cache"
    rows, split = [], None
    for name in [r.strip() for r in args.recipes.split(",") if r.strip()]:
        log(f"training recipe {name} ...")
        out = work / "runs" / name
        rows.append(spawn(child_command(name, args, data, out, cache, split), cache))
        if split is None and not args.own_splits:
            split = RunFolder(out).split_file
        log(f"  {name}: {rows[-1]['train_images_per_second']} train img/s, "
            f"test acc {rows[-1]['test_accuracy']['value']:.4f}")
    return {"command": command, "data": str(args.data), "max_images": args.max_images,
            "same_split": not args.own_splits,
            "machine": machine(), "import_seconds": round(import_seconds(), 2), "recipes": rows}


def main(argv: list[str] | None = None) -> None:
    """Parent: subsample, train each recipe in a child, print the table and JSON."""
    args = parse_args(argv)
    if args.child_recipe:
        print(json.dumps(run_recipe(args.child_recipe, args), default=float), flush=True)
        return
    command = announce(args.json)
    with scratch_dir("mediscan-train-speed-", args.dir, args.keep) as work:
        result = run_all(args, work, command)
    emit(result, json_only=args.json, text=render(result["recipes"], args.target_acc, result["import_seconds"]))


if __name__ == "__main__":
    main()
