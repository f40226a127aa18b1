"""Training input from a decoded-image cache bigger than RAM: throughput and bounded host memory.

    python bench/cache_scale.py --gib 26      # the issue-4 check: a 26 GiB cache, > RAM here
    python bench/cache_scale.py --gib 2       # quick check of the same path

Writes a synthetic uint8 N x 3 x S x S `.npy` cache (a few random image blocks tiled, written
in chunks with plain file writes, so writing costs no memory), evicts it from the page cache
(`posix_fadvise(DONTNEED)`, this file only) so reads come from disk, then streams training
batches through `mediscan.training.loop.image_source(..., ram_fraction=...)` + `BatchPipeline`
(the trainer's own input path, with augmentation) for `--batches` batches of a random epoch
order. Every image carries its row number in its first bytes, so the benchmark also checks that
the streamed rows are the rows asked for. Reports images/s (whole batch and the read alone) and
peak RSS (`getrusage`, plus the anonymous and file-backed parts sampled from /proc), which must
stay far below the file size. The file is deleted at the end unless --keep. Never asserts on time.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench_common import MIB, announce, emit, fmt, log, machine, peak_rss_mib, physical_ram, rss_now_mib, table

GIB = 2**30
CHUNK_BYTES = 64 * MIB
BLOCKS = 16
STAMP_BYTES = 8
HEADROOM_BYTES = 2 * GIB


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=26.0, help="Size of the synthetic cache, GiB.")
    parser.add_argument("--size", type=int, default=224, help="Image side in pixels (3 channels).")
    parser.add_argument("--dir", type=Path, default=None, help="Where the file goes (default: temp).")
    parser.add_argument("--keep", action="store_true", help="Keep the file (its path is printed).")
    parser.add_argument("--batches", type=int, default=100, help="Training batches to stream.")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--augment", default="none",
                        help="mediscan.augment preset applied in the pipeline (default none: the "
                             "input path alone; 'strong' adds the default recipe's augmentation).")
    parser.add_argument("--ram-fraction", type=float, default=None,
                        help="image_source's threshold (default: the library's 0.4, or lower when "
                             "the file would fit, so the streaming path is what gets measured).")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--warm", action="store_true", help="Do not evict the file from the page cache.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="Print the JSON line only.")
    return parser.parse_args(argv)


# ------------------------------------------------------------------------- the synthetic file
def check_disk(folder: Path, nbytes: int) -> None:
    """Refuse, naming the numbers, when the file plus headroom does not fit on the disk."""
    free = shutil.disk_usage(folder).free
    if free < nbytes + HEADROOM_BYTES:
        raise SystemExit(f"not enough disk in {folder}: the cache needs {nbytes / GIB:.1f} GiB plus "
                         f"{HEADROOM_BYTES / GIB:.0f} GiB headroom, {free / GIB:.1f} GiB is free; "
                         "use a smaller --gib or another --dir")


def stamp(block: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Write each row's number (little-endian int64) into its first bytes, in place."""
    flat = block.reshape(len(block), -1)
    flat[:, :STAMP_BYTES] = rows.astype("<i8").view(np.uint8).reshape(-1, STAMP_BYTES)
    return block


def write_cache(path: Path, n: int, size: int, seed: int) -> float:
    """Write an (n, 3, size, size) uint8 .npy file chunk by chunk; returns seconds taken."""
    started = time.perf_counter()
    header = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n, 3, size, size))
    offset = header.offset
    del header
    blocks = np.random.default_rng(seed).integers(0, 256, (BLOCKS, 3, size, size), dtype=np.uint8)
    per_chunk = max(1, CHUNK_BYTES // blocks[0].nbytes)
    with open(path, "r+b") as handle:
        handle.seek(offset)
        for start in range(0, n, per_chunk):
            rows = np.arange(start, min(n, start + per_chunk))
            handle.write(stamp(blocks[rows % BLOCKS], rows).tobytes())
        handle.flush()
        os.fsync(handle.fileno())
    return time.perf_counter() - started


def evict(path: Path) -> None:
    """Drop this file's pages from the page cache, so the benchmark reads from disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------------- streaming
class TimedSource:
    """Wraps an image source: times each gather and checks the rows' stamps."""

    def __init__(self, source, rows: np.ndarray) -> None:
        self.source, self.rows = source, rows
        self.device = source.device
        self.seconds, self.images, self.wrong = 0.0, 0, 0

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: torch.Tensor) -> torch.Tensor:
        started = time.perf_counter()
        batch = self.source[index]
        self.seconds += time.perf_counter() - started
        self.images += len(batch)
        got = batch.reshape(len(batch), -1)[:, :STAMP_BYTES].cpu().numpy().copy().view("<i8").ravel()
        self.wrong += int((got != self.rows[index.cpu().numpy()]).sum())
        return batch


def ram_fraction_for(nbytes: int, requested: float | None) -> float:
    """The library's 0.4, or just below the file's share of RAM when 0.4 would load it whole."""
    if requested is not None:
        return requested
    return min(0.4, 0.5 * nbytes / physical_ram())


def stream(path: Path, args: argparse.Namespace) -> dict:
    """Stream `--batches` training batches through image_source + BatchPipeline; the figures."""
    from mediscan.augment import BatchAugment
    from mediscan.training.loop import BatchPipeline, StreamedImages, image_source
    from mediscan.training.sampling import epoch_order

    images = np.load(path, mmap_mode="r")
    rows = np.arange(len(images))
    device = torch.device(args.device)
    fraction = ram_fraction_for(images.nbytes, args.ram_fraction)
    source = image_source(images, rows, device, ram_fraction=fraction)
    timed = TimedSource(source, rows)
    labels = torch.from_numpy(np.random.default_rng(args.seed).integers(0, 4, len(rows))).to(device)
    pipeline = BatchPipeline(
        images=timed, labels=labels, device=device,
        mean=torch.full((1, 3, 1, 1), 0.5, device=device), std=torch.full((1, 3, 1, 1), 0.25, device=device),
        augment=None if args.augment == "none" else BatchAugment(args.augment, seed=args.seed))
    order = epoch_order(len(labels), None, torch.Generator().manual_seed(args.seed))
    before = rss_now_mib()
    peaks = dict(before)
    started = time.perf_counter()
    for b in range(args.batches):
        index = order[b * args.batch_size:(b + 1) * args.batch_size]
        if len(index) == 0:
            break
        x, _ = pipeline.batch(index)
        peaks = {k: max(v, rss_now_mib()[k]) for k, v in peaks.items()}
        if (b + 1) % 20 == 0:
            log(f"  batch {b + 1}/{args.batches}: {timed.images / (time.perf_counter() - started):.0f} "
                f"images/s, RSS {peaks['rss']:.0f} MiB")
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    return {"streamed": isinstance(source, StreamedImages), "ram_fraction": round(fraction, 4),
            "batches": -(-timed.images // args.batch_size), "images": timed.images,
            "seconds": round(seconds, 2), "images_per_second": round(timed.images / seconds, 1),
            "read_images_per_second": round(timed.images / max(timed.seconds, 1e-9), 1),
            "streamed_gib": round(timed.images * images[0].nbytes / GIB, 3),
            "read_mib_per_second": round(timed.images * images[0].nbytes / MIB / max(timed.seconds, 1e-9), 1),
            "wrong_rows": timed.wrong, "rss_before_mib": {k: round(v, 1) for k, v in before.items()},
            "peak_rss_sampled_mib": {k: round(v, 1) for k, v in peaks.items()},
            "batch_shape": list(x.shape)}


def render(result: dict) -> str:
    """The human summary: one table row."""
    s = result["stream"]
    columns = ["cache GiB", "images", "RAM GiB", "streamed", "batches", "read GiB", "img/s", "read img/s",
               "read MiB/s", "peak RSS MiB", "anon MiB", "file MiB", "RSS/file %", "wrong rows"]
    before, peak = s["rss_before_mib"], s["peak_rss_sampled_mib"]
    row = [fmt(result["file_gib"], ".2f"), str(result["n_images"]), fmt(result["machine"]["ram_gib"]),
           "yes" if s["streamed"] else "no", str(s["batches"]), fmt(s["streamed_gib"], ".2f"),
           fmt(s["images_per_second"]),
           fmt(s["read_images_per_second"]), fmt(s["read_mib_per_second"], ".0f"),
           fmt(result["peak_rss_mib"], ".0f"), f"{before['anon']:.0f}->{peak['anon']:.0f}",
           f"{before['file']:.0f}->{peak['file']:.0f}",
           fmt(100 * result["peak_rss_mib"] / (result["file_gib"] * 1024), ".1f"), str(s["wrong_rows"])]
    cache = "warm" if result["warm"] else "evicted before reading"
    return table(columns, [row]) + (f"\nwrote the cache in {result['write_seconds']:.1f} s; page cache "
                                    f"{cache}; anon/file MiB: resident before streaming -> peak while "
                                    "streaming")


def exit_on_term(signum: int, frame) -> None:
    """SIGTERM -> SystemExit, so the big file is still deleted."""
    raise SystemExit(f"stopped by signal {signum}")


def main(argv: list[str] | None = None) -> None:
    """Check the disk, write, stream, report, delete."""
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, exit_on_term)
    command = announce(args.json)
    per_image = 3 * args.size * args.size
    n = max(args.batch_size, math.ceil(args.gib * GIB / per_image))
    folder = Path(args.dir or tempfile.gettempdir())
    check_disk(folder, n * per_image)
    path = Path(tempfile.mkdtemp(prefix="mediscan-cache-scale-", dir=folder)) / "cache.npy"
    try:
        log(f"writing {n} images of 3x{args.size}x{args.size} ({n * per_image / GIB:.2f} GiB) to {path}")
        write_seconds = write_cache(path, n, args.size, args.seed)
        if not args.warm:
            evict(path)
        log(f"streaming {args.batches} batches of {args.batch_size}")
        result = {"command": command, "file": str(path), "file_gib": round(path.stat().st_size / GIB, 3),
                  "n_images": n, "size": args.size, "write_seconds": round(write_seconds, 1),
                  "warm": args.warm, "machine": machine(), "stream": stream(path, args)}
        result["peak_rss_mib"] = round(peak_rss_mib(), 1)
        emit(result, json_only=args.json, text=render(result))
    finally:
        if args.keep:
            log(f"kept {path}")
        else:
            shutil.rmtree(path.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
