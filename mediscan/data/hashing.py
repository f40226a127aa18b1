"""Exact and perceptual hashes of decoded images, a multi-index near-duplicate search, and groups.

- exact: blake2b of the decoded pixels (greyscale when all channels are equal), so a PNG and a
  BMP of the same pixels match whatever their names;
- near: candidates whose 64-bit DCT perceptual hashes (imagehash.phash) differ in at most
  `max_distance` bits, confirmed when their 48x48 standardised greyscale thumbnails correlate
  at >= `min_correlation`. pHash alone merges distinct slices that share a global shape
  (measured on the brain-tumour Training folder: distance <= 8 alone chains 1,730 of 2,000
  distinct phantom slices into one group); the thumbnail check keeps resized and re-encoded
  copies (correlation ~0.99) and drops look-alikes. Candidate search is multi-index hashing:
  split the hash into max_distance + 1 chunks; a pair within the distance shares at least one
  chunk exactly (pigeonhole), so only bucket-mates are compared, never all pairs.
Hashes and thumbnails are cached per file (path, size, mtime): a repeat run decodes nothing.
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

DEFAULT_MAX_DISTANCE = 8
DEFAULT_MIN_CORRELATION = 0.95
HASH_BITS = 64
THUMB = 48


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


def thumbnail(img: np.ndarray) -> np.ndarray:
    """48 x 48 uint8 greyscale thumbnail (standardised only when compared)."""
    grey = Image.fromarray(canonical_pixels(img)).convert("L")
    return np.asarray(grey.resize((THUMB, THUMB), Image.BILINEAR), dtype=np.uint8)


def thumbnail_correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of paired thumbnails (N x 48 x 48 each)."""
    def standardise(x: np.ndarray) -> np.ndarray:
        x = x.reshape(len(x), -1).astype(np.float32)
        x -= x.mean(axis=1, keepdims=True)
        return x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-6)

    return (standardise(a) * standardise(b)).sum(axis=1)


@dataclass
class Hashes:
    """Per-sample hashes; `ok` is False for unreadable samples (their hashes are empty)."""

    exact: list[str]
    phash: np.ndarray  # uint64
    ok: np.ndarray
    errors: dict[int, str]
    shapes: list[tuple[int, ...]]
    thumbs: np.ndarray  # uint8 N x 48 x 48


Record = tuple[str, int, tuple[int, ...], str, np.ndarray]


def _hash_one(folder: ImageFolder, i: int) -> Record:
    try:
        img = folder.read(i)
    except (ImageReadError, OSError, ValueError) as error:
        return "", 0, (), getattr(error, "reason", str(error)), np.zeros((THUMB, THUMB), np.uint8)
    return exact_hash(img), perceptual_hash(img), tuple(img.shape), "", thumbnail(img)


_STATE: dict = {}


def _init(folder: ImageFolder) -> None:
    _STATE["folder"] = folder


def _hash_chunk(indices: list[int]) -> list[tuple[int, Record]]:
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
    return base / f"{name}.npz"


def _load_cache(path: Path) -> dict[str, Record]:
    if not path.exists():
        return {}
    try:
        with np.load(path) as data:
            meta, thumbs = json.loads(str(data["meta"])), data["thumbs"]
    except (OSError, ValueError, KeyError):
        return {}
    return {stamp: (row[0], int(row[1]), tuple(row[2]), row[3], thumbs[k])
            for k, (stamp, row) in enumerate(meta.items())}


def _save_cache(path: Path, records: dict[str, Record]) -> None:
    meta = {stamp: [r[0], str(r[1]), list(r[2]), r[3]] for stamp, r in records.items()}
    thumbs = np.stack([r[4] for r in records.values()]) if records else np.zeros((0, THUMB, THUMB))
    tmp = path.with_suffix(f".tmp{os.getpid()}.npz")
    np.savez(tmp, meta=np.array(json.dumps(meta)), thumbs=thumbs.astype(np.uint8))
    os.replace(tmp, path)


def compute_hashes(folder: ImageFolder, *, workers: int | None = None, progress: bool = True,
                   cache_dir: Path | None = None) -> Hashes:
    """Exact and perceptual hashes of every sample, decoded in parallel, cached on disk."""
    cache_file = _cache_file(folder, cache_dir)
    cached = _load_cache(cache_file)
    stamps = [_stamp(folder, i) for i in range(len(folder))]
    results: dict[int, Record] = {i: cached[s] for i, s in enumerate(stamps) if s in cached}
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
    if todo:
        cached.update({stamps[i]: results[i] for i in todo if stamps[i] != "missing"})
        _save_cache(cache_file, cached)
    ordered = [results[i] for i in range(len(folder))]
    return Hashes(
        exact=[r[0] for r in ordered],
        phash=np.array([r[1] for r in ordered], dtype=np.uint64),
        ok=np.array([not r[3] for r in ordered]),
        errors={i: r[3] for i, r in enumerate(ordered) if r[3]},
        shapes=[tuple(r[2]) for r in ordered],
        thumbs=np.stack([r[4] for r in ordered]) if ordered else np.zeros((0, THUMB, THUMB), np.uint8),
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


def confirmed_near_pairs(hashes: Hashes, *, max_distance: int = DEFAULT_MAX_DISTANCE,
                         min_correlation: float = DEFAULT_MIN_CORRELATION
                         ) -> list[tuple[int, int, int]]:
    """pHash candidates among readable, non-identical images whose thumbnails agree."""
    candidates = near_pairs(hashes.phash, max_distance, np.flatnonzero(hashes.ok))
    if not candidates:
        return []
    i, j = (np.array([p[k] for p in candidates]) for k in (0, 1))
    keep = thumbnail_correlation(hashes.thumbs[i], hashes.thumbs[j]) >= min_correlation
    return [pair for pair, kept in zip(candidates, keep) if kept]


def duplicate_groups(folder: ImageFolder, *, max_distance: int = DEFAULT_MAX_DISTANCE,
                     min_correlation: float = DEFAULT_MIN_CORRELATION,
                     workers: int | None = None, progress: bool = False,
                     cache_dir: Path | None = None) -> np.ndarray:
    """A group id per sample: exact and near duplicates share one; unreadable ones stand alone."""
    hashes = compute_hashes(folder, workers=workers, progress=progress, cache_dir=cache_dir)
    pairs = exact_pairs(hashes.exact, hashes.ok) + confirmed_near_pairs(
        hashes, max_distance=max_distance, min_correlation=min_correlation)
    return union_groups(len(folder), pairs)
