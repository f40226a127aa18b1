"""Benchmark `mediscan inspect` at scale: synthetic images with planted duplicates.

Writes N small (64x64) textured grey images into class folders, a share of them planted
copies of others: exact (the same pixels as BMP), resized (x0.5..x2, PNG), JPEG re-encoded
(q50..q90) and resized + re-encoded. Then inspects the folder twice (cold, then with the
hash cache) and prints the time, the recall of planted pairs and the false-pair rate.
Never asserts on time. Everything is written to a temporary folder that is removed at the end.

    python bench/inspect_scale.py --n 100000
"""

from __future__ import annotations

import argparse
import io
import os
import shlex
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from mediscan.data.folders import scan_folder
from mediscan.data.hashing import DEFAULT_MAX_DISTANCE, DEFAULT_MIN_CORRELATION, compute_hashes
from mediscan.data.inspect import duplicate_pairs, inspect_folder

SIZE = 64
CLASSES = 4
KINDS = ("exact", "resized", "jpeg", "resized+jpeg")
Plant = tuple[str, str, str]  # original key, copy key, kind


def texture(rng: np.random.Generator) -> np.ndarray:
    """A 64x64 grey image: random 6x6 blobs, smoothly upsampled, plus fine noise."""
    coarse = Image.fromarray(rng.integers(0, 256, (6, 6), dtype=np.uint8))
    smooth = np.asarray(coarse.resize((SIZE, SIZE), Image.BICUBIC), dtype=np.float32)
    return np.clip(smooth + rng.normal(0, 6, smooth.shape), 0, 255).astype(np.uint8)


def copy_of(pixels: np.ndarray, kind: str, rng: np.random.Generator) -> tuple[bytes, str]:
    """The encoded bytes and suffix of one planted copy."""
    image = Image.fromarray(pixels)
    if "resized" in kind:
        side = int(SIZE * rng.choice([0.5, 0.75, 1.5, 2.0]))
        image = image.resize((side, side), Image.BICUBIC)
    buffer = io.BytesIO()
    if "jpeg" in kind:
        image.save(buffer, "JPEG", quality=int(rng.integers(50, 91)))
        return buffer.getvalue(), ".jpg"
    image.save(buffer, "BMP" if kind == "exact" else "PNG")
    return buffer.getvalue(), ".bmp" if kind == "exact" else ".png"


def write_block(root: str, start: int, stop: int, copies: int, seed: int) -> list[Plant]:
    """Originals start..stop-1; the first `copies` of them get one planted copy each."""
    planted = []
    for k in range(start, stop):
        rng = np.random.default_rng([seed, k])
        pixels = texture(rng)
        key = f"c{k % CLASSES}/img{k:07d}.png"
        Image.fromarray(pixels).save(Path(root) / key, compress_level=1)
        if k - start < copies:
            kind = KINDS[k % len(KINDS)]
            data, suffix = copy_of(pixels, kind, rng)
            copy_key = f"c{k % CLASSES}/copy{k:07d}{suffix}"
            (Path(root) / copy_key).write_bytes(data)
            planted.append((key, copy_key, kind))
    return planted


def generate(root: Path, n: int, copy_share: float, seed: int, workers: int) -> list[Plant]:
    """N images in total, `copy_share` of them planted copies; returns the planted pairs."""
    for c in range(CLASSES):
        (root / f"c{c}").mkdir(parents=True, exist_ok=True)
    copies = int(n * copy_share)
    originals = n - copies
    blocks = np.linspace(0, originals, max(2, workers * 8) + 1).astype(int)
    shares = np.diff(np.linspace(0, copies, len(blocks)).astype(int))
    jobs = [(str(root), int(a), int(b), int(c), seed) for a, b, c in zip(blocks, blocks[1:], shares)]
    with ProcessPoolExecutor(workers) as pool:
        results = pool.map(write_block, *zip(*jobs))
        return [plant for block in results for plant in block]


def score(root: Path, planted: list[Plant], cache: Path, max_distance: int,
          min_correlation: float, workers: int) -> dict:
    """Recall of planted pairs and the share of reported pairs that were not planted."""
    folder = scan_folder(root)
    hashes = compute_hashes(folder, workers=workers, progress=False, cache_dir=cache)
    pairs = duplicate_pairs(hashes, max_distance=max_distance, min_correlation=min_correlation)
    key = {i: s.key for i, s in enumerate(folder.samples)}
    found = {frozenset((key[int(i)], key[int(j)])) for i, j in zip(pairs.i, pairs.j)}
    wanted = {frozenset(p[:2]) for p in planted}
    missed = [p for p in planted if frozenset(p[:2]) not in found]
    by_kind = {kind: sum(p[2] == kind for p in missed) for kind in KINDS}
    false = len(found - wanted)
    return {"images": len(folder), "planted": len(wanted), "found": len(wanted) - len(missed),
            "recall": (len(wanted) - len(missed)) / max(1, len(wanted)), "missed_by_kind": by_kind,
            "reported_pairs": len(found), "false_pairs": false,
            "false_pair_rate": false / max(1, len(found)), "missed_examples": missed[:5]}


def main(argv: list[str] | None = None) -> None:
    """Generate, inspect cold and warm, score, clean up."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="images in total")
    parser.add_argument("--copies", type=float, default=0.1, help="share of planted copies")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--max-distance", type=int, default=DEFAULT_MAX_DISTANCE)
    parser.add_argument("--min-correlation", type=float, default=DEFAULT_MIN_CORRELATION)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dir", type=Path, default=None, help="work folder (default: a temp one)")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="mediscan-bench-", dir=args.dir))
    try:
        run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, work: Path) -> None:
    """The benchmark inside `work`."""
    print("command:", shlex.join([sys.executable, *sys.argv]))
    started = time.perf_counter()
    planted = generate(work / "data", args.n, args.copies, args.seed, args.workers)
    print(f"generated {args.n} images ({len(planted)} planted copies) "
          f"in {time.perf_counter() - started:.1f} s")
    options = {"max_distance": args.max_distance, "min_correlation": args.min_correlation,
               "workers": args.workers, "progress": False, "cache_dir": work / "cache"}
    for run_name in ("cold", "repeat"):
        started = time.perf_counter()
        report = inspect_folder(work / "data", out=work / "out", **options)
        print(f"inspect ({run_name}): {time.perf_counter() - started:.1f} s {report['seconds']}")
    result = score(work / "data", planted, work / "cache", args.max_distance,
                   args.min_correlation, args.workers)
    print(f"planted pairs found: {result['found']} of {result['planted']} "
          f"(recall {result['recall']:.4f}; missed by kind {result['missed_by_kind']})")
    print(f"reported pairs: {result['reported_pairs']}, not planted: {result['false_pairs']} "
          f"(false-pair rate {result['false_pair_rate']:.4f})")
    for missed in result["missed_examples"]:
        print("  missed:", missed)
    exact, near = report["exact_duplicates"], report["near_duplicates"]
    print(f"report: {exact['groups']} exact groups, {near['groups']} near groups, "
          f"{report['label_conflicts']['groups']} label conflicts")


if __name__ == "__main__":
    main()
