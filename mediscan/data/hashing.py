"""Exact and perceptual hashes of decoded images, a multi-index near-duplicate search, and groups.

- exact: blake2b of the decoded pixels (greyscale when all channels are equal), so a PNG and a
  BMP of the same pixels match whatever their names;
- near: 64-bit DCT perceptual hash (imagehash.phash) of the greyscale image; two images are
  near duplicates within `max_distance` bits. Search is multi-index hashing: split the hash
  into max_distance + 1 chunks; any pair within the distance shares at least one chunk
  exactly (pigeonhole), so only bucket-mates are compared, never all pairs.
Hashes are cached per file (path, size, mtime) so a repeat run decodes nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image

from mediscan.data.folders import ImageFolder
from mediscan.data.readers import ImageReadError
from mediscan.progress import progress_bar

DEFAULT_MAX_DISTANCE = 6
HASH_BITS = 64


def canonical_pixels(img: np.ndarray) -> np.ndarray:
    """Greyscale stored as RGB counts as greyscale, so containers and modes don't matter."""
    if img.ndim == 3 and img.shape[2] >= 3 and (img[..., 0] == img[..., 1]).all() \
            and (img[..., 1] == img[..., 2]).all():
        return img[..., 0]
    return img


def exact_hash(img: np.ndarray) -> str:
    pixels = np.ascontiguousarray(canonical_pixels(img))
    digest = hashlib.blake2b(pixels.tobytes(), digest_size=16)
    digest.update(str(pixels.shape).encode())
    return digest.hexdigest()


def perceptual_hash(img: np.ndarray) -> int:
    """64-bit pHash of the greyscale image as an int."""
    grey = Image.fromarray(canonical_pixels(img)).convert("L")
    return int(str(imagehash.phash(grey)), 16)


@dataclass
class Hashes:
    """Per-sample hashes; `ok` is False for unreadable samples (their hashes are empty)."""

    exact: list[str]
    phash: np.ndarray  # uint64
    ok: np.ndarray
    errors: dict[int, str]
    shapes: list[tuple[int, ...]]


def _hash_one(folder: ImageFolder, i: int) -> tuple[str, int, tuple[int, ...], str]:
    try:
        img = folder.read(i)
    except (ImageReadError, OSError, ValueError) as error:
        return "", 0, (), getattr(error, "reason", str(error))
    return exact_hash(img), perceptual_hash(img), tuple(img.shape), ""


_STATE: dict = {}


def _init(folder: ImageFolder) -> None:
    _STATE["folder"] = folder


def _hash_chunk(indices: list[int]) -> list[tuple[int, tuple]]:
    return [(i, _hash_one(_STATE["folder"], i)) for i in indices]


def _stamp(folder: ImageFolder, i: int) -> str:
    sample = folder.samples[i]
    try:
        stat = os.stat(folder.root / sample.path)
    except OSError:
        return "missing"
    return f"{sample.key}|{stat.st_size}|{stat.st_mtime_ns}"


def _cache_file(folder: ImageFolder, cache_dir: Path | None) -> Path:
    from mediscan.data.cache import default_cache_dir

    base = Path(cache_dir or default_cache_dir()) / "hashes"
    base.mkdir(parents=True, exist_ok=True)
    name = hashlib.blake2b(str(folder.root.resolve()).encode(), digest_size=8).hexdigest()
    return base / f"{name}.json"


def compute_hashes(folder: ImageFolder, *, workers: int | None = None, progress: bool = True,
                   cache_dir: Path | None = None) -> Hashes:
    """Exact and perceptual hashes of every sample, decoded in parallel, cached on disk."""
    cache_file = _cache_file(folder, cache_dir)
    cached = json.loads(cache_file.read_text()) if cache_file.exists() else {}
    stamps = [_stamp(folder, i) for i in range(len(folder))]
    results: dict[int, tuple] = {i: tuple(cached[s]) for i, s in enumerate(stamps) if s in cached}
    todo = [i for i in range(len(folder)) if i not in results]
    chunks = [todo[k:k + 64] for k in range(0, len(todo), 64)]
    workers = workers or min(8, os.cpu_count() or 1)
    _init(folder)
    with progress_bar("hashing images", len(todo), progress and bool(todo)) as advance:
        pool = ProcessPoolExecutor(workers, initializer=_init, initargs=(folder,)) \
            if workers > 1 and len(chunks) > 1 else None
        try:
            for chunk in (pool.map(_hash_chunk, chunks) if pool else map(_hash_chunk, chunks)):
                results.update(chunk)
                advance(len(chunk))
        finally:
            if pool is not None:
                pool.shutdown()
    cached.update({stamps[i]: list(results[i]) for i in todo if stamps[i] != "missing"})
    cache_file.write_text(json.dumps(cached))
    ordered = [results[i] for i in range(len(folder))]
    return Hashes(
        exact=[r[0] for r in ordered],
        phash=np.array([r[1] for r in ordered], dtype=np.uint64),
        ok=np.array([not r[3] for r in ordered]),
        errors={i: r[3] for i, r in enumerate(ordered) if r[3]},
        shapes=[tuple(r[2]) for r in ordered],
    )


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bit differences between uint64 hashes (element-wise)."""
    x = np.bitwise_xor(a.astype(np.uint64), b.astype(np.uint64))
    return np.unpackbits(x.view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1)


def near_pairs(hashes: np.ndarray, max_distance: int, candidates: np.ndarray | None = None
               ) -> list[tuple[int, int, int]]:
    """(i, j, distance) for all i < j with Hamming distance <= max_distance, by multi-index hashing."""
    hashes = np.asarray(hashes, dtype=np.uint64)
    index = np.arange(len(hashes)) if candidates is None else np.asarray(candidates)
    chunks = max_distance + 1
    bounds = np.linspace(0, HASH_BITS, chunks + 1).astype(int)
    found: set[tuple[int, int]] = set()
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        keys = (hashes[index] >> np.uint64(lo)) & np.uint64((1 << (hi - lo)) - 1)
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
        ends = np.r_[starts[1:], len(order)]
        for s, e in zip(starts, ends):
            if e - s < 2:
                continue
            members = index[order[s:e]]
            a, b = np.triu_indices(len(members), k=1)
            close = hamming(hashes[members[a]], hashes[members[b]]) <= max_distance
            for i, j in zip(members[a][close], members[b][close]):
                found.add((min(i, j), max(i, j)))
    return [(i, j, int(hamming(hashes[[i]], hashes[[j]])[0])) for i, j in sorted(found)]


def union_groups(n: int, pairs) -> np.ndarray:
    """Connected components of `pairs` over n items: a group id per item (smallest member)."""
    parent = np.arange(n)

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, j, *_ in pairs:
        ri, rj = find(int(i)), find(int(j))
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    return np.array([find(i) for i in range(n)])


def exact_pairs(exact: list[str], ok: np.ndarray) -> list[tuple[int, int, int]]:
    """Consecutive members of each identical-pixels class, as pairs (enough for union-find)."""
    first: dict[str, int] = {}
    pairs = []
    for i, key in enumerate(exact):
        if not ok[i]:
            continue
        if key in first:
            pairs.append((first[key], i, 0))
        else:
            first[key] = i
    return pairs


def duplicate_groups(folder: ImageFolder, *, max_distance: int = DEFAULT_MAX_DISTANCE,
                     workers: int | None = None, progress: bool = False,
                     cache_dir: Path | None = None) -> np.ndarray:
    """A group id per sample: exact and near duplicates share one; unreadable ones stand alone."""
    hashes = compute_hashes(folder, workers=workers, progress=progress, cache_dir=cache_dir)
    readable = np.flatnonzero(hashes.ok)
    pairs = exact_pairs(hashes.exact, hashes.ok) + near_pairs(hashes.phash, max_distance, readable)
    return union_groups(len(folder), pairs)
