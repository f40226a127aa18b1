"""Exact and perceptual hashes of decoded images, a multi-index near-duplicate search, and groups.

- exact: blake2b of the decoded pixels (greyscale when all channels are equal), so a PNG and a
  BMP of the same pixels match whatever their names;
- near: candidates whose 64-bit DCT perceptual hashes (imagehash.phash) differ in at most
  `max_distance` bits, confirmed when their 48x48 standardised greyscale thumbnails correlate
  at >= `min_correlation`. Thresholds measured on the brain-tumour Training folder (5,708
  images) and on copies planted in it: resized (x0.25..x1.7) and JPEG re-encoded (q20..q90)
  copies lie within 6 bits (imagehash's pHash distances are always even) and correlate at
  >= 0.992; pHash alone merges distinct neighbouring slices of one patient (1,839 candidate
  pairs at distance 6, 3,861 at 8), and so does a correlation of 0.95 (most pairs between
  0.95 and 0.99 are neighbouring slices), while copies re-processed by the data set's authors
  (contrast, sharpening) still correlate at >= 0.99 at distances 8..12. Hence 8 bits and 0.99.
  Candidate search is multi-index hashing: split the hash into max_distance + 1 chunks; a
  pair within the distance shares at least one chunk exactly (pigeonhole), so only
  bucket-mates are compared, never all pairs.
Hashes and thumbnails are cached per file (path, size, mtime): a repeat run decodes nothing.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import imagehash
import numpy as np
from PIL import Image

from mediscan.data.folders import ImageFolder
from mediscan.data.readers import ImageReadError
from mediscan.progress import progress_bar

DEFAULT_MAX_DISTANCE = 8
CORRELATION_CHUNK = 20_000  # candidate pairs whose thumbnails are compared at once (~0.4 GB)
MAX_CANDIDATES_PER_IMAGE = 50  # pHash candidates per image before the distance is tightened
MAX_COMPARISONS_PER_IMAGE = 2000  # hash comparisons per image the near search may make before it is tightened
DEFAULT_MIN_CORRELATION = 0.99
HASH_BITS = 64
THUMB = 48
BLOCK_ELEMENTS = 4_000_000  # distances computed at once in one bucket of the near search


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


def thumbnail(img: np.ndarray, side: int = THUMB) -> np.ndarray:
    """side x side (48 x 48) uint8 greyscale thumbnail (standardised only when compared)."""
    grey = Image.fromarray(canonical_pixels(img)).convert("L")
    return np.asarray(grey.resize((side, side), Image.BILINEAR), dtype=np.uint8)


def standardised(thumbs: np.ndarray) -> np.ndarray:
    """Thumbnails (N x 48 x 48) as unit-length, zero-mean float rows: their dot product is the correlation."""
    x = thumbs.reshape(len(thumbs), -1).astype(np.float32)
    x -= x.mean(axis=1, keepdims=True)
    return x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-6)


def thumbnail_correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of paired thumbnails (N x 48 x 48 each)."""
    return (standardised(a) * standardised(b)).sum(axis=1)


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


def _init(folder: ImageFolder, compute: Callable[[ImageFolder, int], Any]) -> None:
    _STATE.update(folder=folder, compute=compute)


def _compute_chunk(indices: list[int]) -> list[tuple[int, Any]]:
    return [(i, _STATE["compute"](_STATE["folder"], i)) for i in indices]


def map_samples(folder: ImageFolder, compute: Callable[[ImageFolder, int], Any], indices: list[int], *,
                workers: int | None = None, progress: bool = True, title: str = "decoding images"
                ) -> dict[int, Any]:
    """`compute(folder, i)` for each index, in parallel processes (a module-level `compute`)."""
    chunks = [indices[k:k + 64] for k in range(0, len(indices), 64)]
    workers = workers or min(8, os.cpu_count() or 1)
    _init(folder, compute)
    results: dict[int, Any] = {}
    with progress_bar(title, len(indices), progress and bool(indices)) as advance:
        pool = ProcessPoolExecutor(workers, initializer=_init, initargs=(folder, compute)) \
            if workers > 1 and len(chunks) > 1 else None
        try:
            for chunk in (pool.map(_compute_chunk, chunks) if pool else map(_compute_chunk, chunks)):
                results.update(chunk)
                advance(len(chunk))
        finally:
            if pool is not None:
                pool.shutdown()
    return results


def file_stamp(folder: ImageFolder, i: int) -> str:
    """Sample key, file size and mtime: a per-file cache entry is valid while this is unchanged."""
    sample = folder.samples[i]
    try:
        stat = os.stat(folder.root / sample.path)
    except OSError:
        return "missing"
    return f"{sample.key}|{stat.st_size}|{stat.st_mtime_ns}"


def cache_file(folder: ImageFolder, cache_dir: Path | None, kind: str = "hashes", suffix: str = ".npz") -> Path:
    """The per-folder cache file of one kind of per-file results."""
    from mediscan.data.cache import default_cache_dir

    base = Path(cache_dir or default_cache_dir()) / kind
    base.mkdir(parents=True, exist_ok=True)
    name = hashlib.blake2b(str(folder.root.resolve()).encode(), digest_size=8).hexdigest()
    return base / f"{name}{suffix}"


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
    path = cache_file(folder, cache_dir)
    cached = _load_cache(path)
    stamps = [file_stamp(folder, i) for i in range(len(folder))]
    results: dict[int, Record] = {i: cached[s] for i, s in enumerate(stamps) if s in cached}
    todo = [i for i in range(len(folder)) if i not in results]
    results.update(map_samples(folder, _hash_one, todo, workers=workers, progress=progress,
                               title="hashing images"))
    if todo:
        cached.update({stamps[i]: results[i] for i in todo if stamps[i] != "missing"})
        _save_cache(path, cached)
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
    """Bit differences between uint64 hashes (element-wise, broadcasting)."""
    return popcount(np.bitwise_xor(np.asarray(a, np.uint64), np.asarray(b, np.uint64)))


def popcount(x: np.ndarray) -> np.ndarray:
    """Set bits of each uint64 (np.bitwise_count where numpy has it)."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x).astype(np.int64)
    flat = np.ascontiguousarray(x, dtype=np.uint64).reshape(-1, 1).view(np.uint8)
    return np.unpackbits(flat, axis=1).sum(axis=1).astype(np.int64).reshape(np.shape(x))


def near_pairs(hashes: np.ndarray, max_distance: int, candidates: np.ndarray | None = None
               ) -> list[tuple[int, int, int]]:
    """(i, j, distance) for all i < j with Hamming distance <= max_distance, by multi-index hashing."""
    if max_distance < 0:
        raise ValueError(f"max_distance must be >= 0, got {max_distance}")
    hashes = np.asarray(hashes, dtype=np.uint64)
    index = np.arange(len(hashes)) if candidates is None else np.asarray(candidates, np.int64)
    found = [np.zeros((0, 2), np.int64)]
    for keys in _segment_keys(hashes[index], max_distance):
        found += [_close_pairs(hashes, members, max_distance) for members in _buckets(index, keys)]
    pairs = np.unique(np.concatenate(found), axis=0)
    distances = hamming(hashes[pairs[:, 0]], hashes[pairs[:, 1]])
    return [(int(i), int(j), int(k)) for (i, j), k in zip(pairs, distances)]


def _segment_keys(hashes: np.ndarray, max_distance: int) -> Iterator[np.ndarray]:
    """The hashes cut into max_distance + 1 bit segments: two hashes within the distance agree on one."""
    for lo, hi in pairwise(np.linspace(0, HASH_BITS, max_distance + 2).astype(int)):
        yield (hashes >> np.uint64(lo)) & np.uint64((1 << (hi - lo)) - 1)


def search_comparisons(hashes: np.ndarray, index: np.ndarray, max_distance: int) -> int:
    """Hash pairs `near_pairs` compares at this distance: the pairs that share a segment's bucket."""
    total = 0
    for keys in _segment_keys(np.asarray(hashes, np.uint64)[index], max_distance):
        _, counts = np.unique(keys, return_counts=True)
        total += int((counts * (counts - 1) // 2).sum())
    return total


def _buckets(index: np.ndarray, keys: np.ndarray) -> list[np.ndarray]:
    """Members (ascending) of each bucket of equal keys that holds at least two."""
    order = np.argsort(keys, kind="stable")
    starts = np.flatnonzero(np.r_[True, keys[order][1:] != keys[order][:-1]])
    ends = np.r_[starts[1:], len(order)]
    return [np.sort(index[order[s:e]]) for s, e in zip(starts, ends) if e - s > 1]


def _close_pairs(hashes: np.ndarray, members: np.ndarray, max_distance: int) -> np.ndarray:
    """(i, j) rows, i < j, of bucket members within the distance; blocks of rows bound memory."""
    rows = max(1, BLOCK_ELEMENTS // len(members))
    found = []
    for start in range(0, len(members) - 1, rows):
        block = members[start:start + rows]
        later = members[start:]
        distance = hamming(hashes[block][:, None], hashes[later][None, :])
        r, c = np.nonzero(distance <= max_distance)
        keep = c > r  # `later` starts at `block`'s first row: column c is member start + c
        found.append(np.stack([block[r[keep]], later[c[keep]]], axis=1))
    return np.concatenate(found)


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
    """pHash candidates among readable, non-identical images whose thumbnails agree.

    On look-alike images (uniform cells, say) the 64-bit pHash cannot tell images apart and
    distance 8 makes nearly every pair a candidate (27,558 synthetic cells: 18 million pairs,
    39 GiB of thumbnails, minutes of comparisons). `pairable_distance` tightens the distance
    until about `MAX_CANDIDATES_PER_IMAGE` candidates per image remain; copies that are resized
    or re-encoded stay within a few bits. Thumbnails are standardised once and compared
    `CORRELATION_CHUNK` pairs at a time, so memory stays bounded."""
    readable = np.flatnonzero(hashes.ok)
    distance = pairable_distance(hashes.phash, readable, max_distance)
    candidates = near_pairs(hashes.phash, distance, readable)
    if not candidates:
        return []
    involved, index = np.unique(np.array([pair[:2] for pair in candidates]), return_inverse=True)
    standard = standardised(hashes.thumbs[involved])  # only the candidates' thumbnails
    index = index.reshape(-1, 2)
    keep = np.concatenate([(standard[chunk[:, 0]] * standard[chunk[:, 1]]).sum(axis=1) >= min_correlation
                           for chunk in np.array_split(index, math.ceil(len(index) / CORRELATION_CHUNK))])
    return [pair for pair, kept in zip(candidates, keep) if kept]


def pairable_distance(phash: np.ndarray, index: np.ndarray, max_distance: int, *, sample: int = 2000,
                      seed: int = 0) -> int:
    """The largest distance <= max_distance at which the pairs expected among `index` (counted on
    a random sample of `sample` images, scaled by the square of the size ratio) stay within
    `MAX_CANDIDATES_PER_IMAGE` per image, and the search compares at most `MAX_COMPARISONS_PER_IMAGE`
    pairs per image (at distance 8 the 7-bit segments of 236,386 hashes share buckets of ~1,850:
    2 billion comparisons, 54 s; at 6, 0.3 billion)."""
    if len(index) <= sample:
        probe, scale = index, 1.0
    else:
        probe = np.sort(np.random.default_rng(seed).choice(index, sample, replace=False))
        scale = (len(index) / sample) ** 2
    for distance in range(max_distance, 0, -1):
        if search_comparisons(phash, index, distance) > MAX_COMPARISONS_PER_IMAGE * len(index):
            continue
        if len(near_pairs(phash, distance, probe)) * scale <= MAX_CANDIDATES_PER_IMAGE * len(index):
            return distance
    return 0


def duplicate_groups(folder: ImageFolder, *, max_distance: int = DEFAULT_MAX_DISTANCE,
                     min_correlation: float = DEFAULT_MIN_CORRELATION,
                     workers: int | None = None, progress: bool = False,
                     cache_dir: Path | None = None) -> np.ndarray:
    """A group id per sample: exact and near duplicates share one; unreadable ones stand alone."""
    hashes = compute_hashes(folder, workers=workers, progress=progress, cache_dir=cache_dir)
    pairs = exact_pairs(hashes.exact, hashes.ok) + confirmed_near_pairs(
        hashes, max_distance=max_distance, min_correlation=min_correlation)
    return union_groups(len(folder), pairs)
