"""Soak test of `mediscan serve` on loopback with mixed good and hostile uploads, and its memory.

    python bench/soak.py RUN --requests 2000 --concurrency 16

Starts its own server (as bench/load_test.py does) and sends `--requests` uploads from
`--concurrency` clients, cycling through: a good 256 px scan, a 6000x6000 PNG (about 100 KB,
108 MB once decoded), a NIfTI bomb (a small .nii.gz declaring 6000x6000x270 voxels), a truncated
PNG, and a form with two 'file' parts. `--hostile-share` of the requests are hostile. Reports
status classes per kind, throughput, p50/p95 latency, and the server's resident memory (RSS,
from /proc) when idle, at its peak during the load and after `--settle-seconds` of rest. Reports,
never asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import io
import json
import shlex
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
from load_test import free_port, sample_image, start_server
from PIL import Image

KINDS = ("good", "big_png", "nifti_bomb", "corrupt", "two_parts")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="Run folder written by `mediscan train`.")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--hostile-share", type=float, default=0.5,
                        help="Share of hostile requests (spread evenly over the four kinds).")
    parser.add_argument("--settle-seconds", type=float, default=5.0)
    parser.add_argument("--max-seconds", type=float, default=600.0)
    parser.add_argument("--json", action="store_true", help="Print only the JSON line.")
    return parser.parse_args(argv)


def nifti_bomb(shape: tuple[int, ...] = (6000, 6000, 270)) -> bytes:
    """A ~1 KB .nii.gz whose header declares `shape` uint8 voxels."""
    import nibabel as nib

    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.uint8)
    return gzip.compress(header.binaryblock + bytes(4) + bytes(2**20))


def big_png(side: int = 6000) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), (90, 90, 90)).save(buffer, format="PNG")
    return buffer.getvalue()


def payloads() -> dict[str, list[tuple[str, tuple[str, bytes]]]]:
    """The multipart `files` list of each kind of request."""
    good = sample_image()
    return {"good": [("file", ("scan.png", good))], "big_png": [("file", ("big.png", big_png()))],
            "nifti_bomb": [("file", ("bomb.nii.gz", nifti_bomb()))],
            "corrupt": [("file", ("cut.png", good[:300]))],
            "two_parts": [("file", ("a.png", good)), ("file", ("b.png", good))]}


def schedule(n: int, hostile_share: float, seed: int = 0) -> list[str]:
    """The kind of each request, shuffled reproducibly."""
    hostile = round(n * hostile_share)
    kinds = ["good"] * (n - hostile) + [KINDS[1 + i % 4] for i in range(hostile)]
    np.random.default_rng(seed).shuffle(kinds)
    return kinds


def rss_mib(pid: int) -> float:
    """Resident memory of a process in MiB (Linux /proc)."""
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


class PeakRss:
    """Samples a process's RSS every 50 ms in a thread; `.peak` in MiB."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, rss_mib(pid), threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, rss_mib(self.pid))


async def fire(http: httpx.AsyncClient, kinds: list[str], files: dict, stop_at: float,
               results: list[tuple[str, int, float]]) -> None:
    """One client: posts the next scheduled request until none are left or time is up."""
    while kinds and time.monotonic() < stop_at:
        kind = kinds.pop()
        started = time.perf_counter()
        try:
            status = (await http.post("/api/predict", files=files[kind])).status_code
        except httpx.HTTPError:
            status = 0
        results.append((kind, status, time.perf_counter() - started))


async def load(base: str, args: argparse.Namespace, pid: int) -> dict:
    files, kinds = payloads(), schedule(args.requests, args.hostile_share)
    results: list[tuple[str, int, float]] = []
    limits = httpx.Limits(max_connections=args.concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=120.0, limits=limits) as http:
        for _ in range(4):  # warm up: the first forward passes allocate for good
            await http.post("/api/predict", files=files["good"])
        await asyncio.sleep(1.0)
        idle = rss_mib(pid)
        started, stop_at = time.perf_counter(), time.monotonic() + args.max_seconds
        with PeakRss(pid) as peak:
            await asyncio.gather(*[fire(http, kinds, files, stop_at, results)
                                   for _ in range(args.concurrency)])
        seconds = time.perf_counter() - started
        await asyncio.sleep(args.settle_seconds)
        settled = rss_mib(pid)
    return summary(results, seconds, args, {"idle": idle, "peak": peak.peak, "settled": settled})


def summary(results: list[tuple[str, int, float]], seconds: float, args: argparse.Namespace,
            rss: dict[str, float]) -> dict:
    """Status classes per kind, throughput, latency percentiles and memory."""
    statuses = {kind: dict(Counter(f"{status // 100}xx" if status else "failed"
                                   for k, status, _ in results if k == kind)) for kind in KINDS}
    latency = np.array([seconds for *_, seconds in results]) * 1000
    good = np.array([s for kind, _, s in results if kind == "good"]) * 1000
    p = lambda values, q: round(float(np.percentile(values, q)), 1) if values.size else None  # noqa: E731
    return {"requests": len(results), "concurrency": args.concurrency, "seconds": round(seconds, 2),
            "throughput_rps": round(len(results) / seconds, 1),
            "p50_ms": p(latency, 50), "p95_ms": p(latency, 95),
            "good_p50_ms": p(good, 50), "good_p95_ms": p(good, 95),
            "statuses": statuses,
            "good_errors": sum(n for c, n in statuses["good"].items() if c != "2xx"),
            "responses_5xx": sum(kind.get("5xx", 0) for kind in statuses.values()),
            "rss_mib": {key: round(value, 1) for key, value in rss.items()},
            "settled_vs_idle": round(rss["settled"] / rss["idle"], 3)}


def report(result: dict, command: str) -> None:
    print(f"command: {command}")
    print(f"{result['requests']} requests from {result['concurrency']} clients in {result['seconds']} s: "
          f"{result['throughput_rps']} requests/s, p50 {result['p50_ms']} ms, p95 {result['p95_ms']} ms "
          f"(good uploads: p50 {result['good_p50_ms']} ms, p95 {result['good_p95_ms']} ms)")
    for kind, counts in result["statuses"].items():
        print(f"  {kind:<11} " + ", ".join(f"{c} {n}" for c, n in sorted(counts.items())))
    rss = result["rss_mib"]
    print(f"errors on good uploads {result['good_errors']}, 5xx responses {result['responses_5xx']}; "
          f"server RSS idle {rss['idle']} MiB, peak {rss['peak']} MiB, settled {rss['settled']} MiB "
          f"({result['settled_vs_idle']:.2f}x idle)")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    port = free_port()
    with tempfile.TemporaryFile() as log:
        server = start_server(args.run, port, log)
        try:
            result = asyncio.run(load(f"http://127.0.0.1:{port}", args, server.pid))
        finally:
            server.terminate()
            server.wait(timeout=30)
    command = shlex.join([Path(sys.executable).name, *sys.argv])
    if not args.json:
        report(result, command)
    print(json.dumps({**result, "command": command}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
