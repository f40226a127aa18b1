"""Decode and preprocess each image once, in parallel, into a memory-mapped uint8 cache on disk."""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mediscan.data.folders import ImageFolder, Skipped
from mediscan.data.readers import ImageReadError
from mediscan.progress import progress_bar
from mediscan.transforms import Preprocess

CACHE_ENV = "MEDISCAN_CACHE"
CACHE_FORMAT = 1


@dataclass
class DecodedImages:
    """Preprocessed images, one row per sample; rows of unreadable samples are zero and not `ok`."""

    images: np.ndarray  # uint8 (N, C, S, S), usually a read-only memory map
    ok: np.ndarray  # bool (N,)
    failures: list[Skipped]
    cache_file: Path | None = None
    cache_hit: bool = False


def default_cache_dir() -> Path:
    """$MEDISCAN_CACHE, or ~/.cache/mediscan."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "mediscan")


def _file_digest(path: Path, memo: dict[Path, str]) -> str:
    if path not in memo:
        memo[path] = hashlib.blake2b(path.read_bytes(), digest_size=16).hexdigest()
    return memo[path]


def content_key(folder: ImageFolder, preprocess: Preprocess) -> str:
    """A key that changes when any file's bytes, the sample list or the preprocessing change."""
    digest = hashlib.blake2b(f"{CACHE_FORMAT}|{preprocess.key()}".encode(), digest_size=16)
    memo: dict[Path, str] = {}
    for sample in folder.samples:
        path = folder.root / sample.path
        file_digest = _file_digest(path, memo) if path.exists() else "missing"
        digest.update(f"{sample.key}|{file_digest}\n".encode())
    return digest.hexdigest()


_WORKER_STATE: dict = {}


def _init_worker(folder: ImageFolder, preprocess: Preprocess) -> None:
    _WORKER_STATE.update(folder=folder, preprocess=preprocess)


def _decode_chunk(indices: list[int]) -> list[tuple[int, np.ndarray | None, str]]:
    """Decode a chunk of samples in a worker; failures come back as (index, None, reason)."""
    folder, preprocess = _WORKER_STATE["folder"], _WORKER_STATE["preprocess"]
    results = []
    for i in indices:
        try:
            results.append((i, preprocess(folder.read(i)), ""))
        except ImageReadError as error:
            results.append((i, None, error.reason))
        except (OSError, ValueError) as error:
            results.append((i, None, f"could not be read ({error})"))
    return results


def _chunks(n: int, size: int) -> list[list[int]]:
    return [list(range(start, min(n, start + size))) for start in range(0, n, size)]


def _decode_all(folder: ImageFolder, preprocess: Preprocess, out: np.ndarray, workers: int,
                progress: bool) -> tuple[np.ndarray, list[Skipped]]:
    """Fill `out` row by row; returns the ok mask and the samples that could not be read."""
    ok = np.zeros(len(folder), dtype=bool)
    failures: list[Skipped] = []
    chunks = _chunks(len(folder), 32)
    _init_worker(folder, preprocess)
    pool = ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(folder, preprocess)) \
        if workers > 1 and len(chunks) > 1 else None
    results = pool.map(_decode_chunk, chunks) if pool else map(_decode_chunk, chunks)
    with progress_bar("decoding images", len(folder), progress) as advance:
        try:
            for chunk in results:
                for i, image, reason in chunk:
                    if image is None:
                        failures.append(Skipped(folder.root / folder.samples[i].path, reason))
                    else:
                        out[i], ok[i] = image, True
                advance(len(chunk))
        finally:
            if pool is not None:
                pool.shutdown()
    return ok, failures


def load_images(folder: ImageFolder, preprocess: Preprocess, *, cache_dir: Path | None = None,
                workers: int | None = None, progress: bool = True,
                use_cache: bool = True) -> DecodedImages:
    """Decoded, preprocessed uint8 images of every sample, from the cache when it has them."""
    n, shape = len(folder), (preprocess.channels, preprocess.size, preprocess.size)
    if not use_cache:
        images = np.zeros((n, *shape), dtype=np.uint8)
        ok, failures = _decode_all(folder, preprocess, images, workers or _default_workers(),
                                   progress)
        return DecodedImages(images, ok, failures)
    cache_dir = Path(cache_dir or default_cache_dir()) / "images"
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = content_key(folder, preprocess)
    data_file, meta_file = cache_dir / f"{key}.npy", cache_dir / f"{key}.json"
    if data_file.exists() and meta_file.exists():
        meta = json.loads(meta_file.read_text())
        ok = np.array(meta["ok"], dtype=bool)
        failures = [Skipped(Path(f["path"]), f["reason"]) for f in meta["failures"]]
        return DecodedImages(np.load(data_file, mmap_mode="r"), ok, failures, data_file, True)
    tmp = data_file.with_suffix(f".tmp{os.getpid()}.npy")
    images = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, *shape))
    ok, failures = _decode_all(folder, preprocess, images, workers or _default_workers(), progress)
    images.flush()
    del images
    os.replace(tmp, data_file)
    meta = {"ok": ok.tolist(), "failures": [{"path": str(f.path), "reason": f.reason}
                                            for f in failures]}
    meta_file.write_text(json.dumps(meta))
    return DecodedImages(np.load(data_file, mmap_mode="r"), ok, failures, data_file, False)


def _default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))
