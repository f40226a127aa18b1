"""Load test of `mediscan serve` on loopback: throughput, p50/p95 latency and errors.

    python bench/load_test.py RUN --requests 500 --concurrency 16

Starts its own server (`python -m mediscan serve RUN` on a free 127.0.0.1 port), posts one
image per request from `--concurrency` clients (httpx), prints the figures and stops the
server. Bounded: `--requests` in all, no new request after `--max-seconds`. Reports, never
asserts on time.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO

import httpx
import numpy as np
from PIL import Image


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="Run folder written by `mediscan train`.")
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--endpoint", choices=["predict", "explain"], default="predict")
    parser.add_argument("--image", type=Path, help="Image to send (default: a 256 px PNG).")
    parser.add_argument("--max-seconds", type=float, default=300.0)
    parser.add_argument("--json", action="store_true", help="Print the result as JSON.")
    return parser.parse_args(argv)


def sample_image() -> bytes:
    """A 256 x 256 grey PNG with a bright disc (a stand-in scan)."""
    yy, xx = np.mgrid[:256, :256]
    pixels = 40 + 150 * (((yy - 120) ** 2 + (xx - 136) ** 2) < 90**2)
    noise = np.random.default_rng(0).normal(0, 8, pixels.shape)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(run: Path, port: int, log: IO[bytes]) -> subprocess.Popen:
    """`mediscan serve` in a child process (output to `log`); returns once /healthz answers."""
    command = [sys.executable, "-m", "mediscan", "serve", str(run), "--host", "127.0.0.1",
               "--port", str(port)]
    server = subprocess.Popen(command, stdout=log, stderr=log)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            log.seek(0)
            raise SystemExit(f"the server exited with code {server.returncode}:\n"
                             + log.read().decode(errors="replace")[-2000:])
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1.0).raise_for_status()
            return server
        except httpx.HTTPError:
            time.sleep(0.2)
    server.terminate()
    raise SystemExit("the server did not answer /healthz within 120 s")


async def client(http: httpx.AsyncClient, url: str, data: bytes, todo: list[int],
                 stop_at: float, latencies: list[float], errors: list[str]) -> None:
    """One client: posts until no requests are left or time is up."""
    while todo and time.monotonic() < stop_at:
        todo.pop()
        started = time.perf_counter()
        try:
            response = await http.post(url, files={"file": ("scan.png", data, "image/png")})
            if response.status_code != 200:
                errors.append(f"HTTP {response.status_code}: {response.text[:120]}")
        except httpx.HTTPError as error:
            errors.append(f"{type(error).__name__}: {error}")
        latencies.append(time.perf_counter() - started)


async def load(base: str, args: argparse.Namespace, data: bytes) -> dict:
    """Fire the requests; throughput, latency percentiles and errors."""
    todo, latencies, errors = list(range(args.requests)), [], []
    limits = httpx.Limits(max_connections=args.concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=60.0, limits=limits) as http:
        started = time.perf_counter()
        stop_at = time.monotonic() + args.max_seconds
        await asyncio.gather(*[client(http, f"/api/{args.endpoint}", data, todo, stop_at,
                                      latencies, errors) for _ in range(args.concurrency)])
        seconds = time.perf_counter() - started
        batching = (await http.get("/healthz")).json().get("batching")
    p50, p95 = np.percentile(latencies, [50, 95]) * 1000 if latencies else (float("nan"),) * 2
    return {"requests": len(latencies), "concurrency": args.concurrency,
            "endpoint": args.endpoint, "seconds": round(seconds, 2),
            "throughput_rps": round(len(latencies) / seconds, 1), "p50_ms": round(float(p50), 1),
            "p95_ms": round(float(p95), 1), "errors": len(errors), "first_errors": errors[:5],
            "batching": batching}


def report(result: dict, command: str) -> None:
    print(f"command: {command}")
    print(f"{result['requests']} x POST /api/{result['endpoint']} from {result['concurrency']} "
          f"clients in {result['seconds']} s: {result['throughput_rps']} requests/s, "
          f"p50 {result['p50_ms']} ms, p95 {result['p95_ms']} ms, errors {result['errors']}")
    print(f"server batching: {result['batching']}")
    for error in result["first_errors"]:
        print(f"  error: {error}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    data = args.image.read_bytes() if args.image else sample_image()
    port = free_port()
    with tempfile.TemporaryFile() as log:
        server = start_server(args.run, port, log)
        try:
            result = asyncio.run(load(f"http://127.0.0.1:{port}", args, data))
        finally:
            server.terminate()
            server.wait(timeout=30)
    command = shlex.join([Path(sys.executable).name, *sys.argv])
    if args.json:
        print(json.dumps({**result, "command": command}, indent=2))
    else:
        report(result, command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
