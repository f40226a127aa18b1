"""Inspect a data set before training: what is in it, what is broken, what is duplicated.

`inspect_folder` hashes every image once (`hashing.compute_hashes`: parallel, cached) and builds
a JSON-serialisable report with pure functions over those hashes:

- counts per split and class, imbalance, image sizes, grey/colour, file types and bytes;
- unreadable files by name, and the junk the folder scan skipped;
- exact duplicates (identical decoded pixels) and near duplicates (pHash within
  `max_distance` bits, confirmed by thumbnail correlation; see `mediscan.data.hashing`);
- label conflicts: a duplicate group whose members carry different classes;
- leakage between the splits of the folder (Training vs Testing) and against other folders
  (`against`): their hashes join DATA's on one multi-index search, and only pairs that cross
  from DATA to the other folder count.

With `out`, contact sheets (`report.contact_sheets`: random samples per class, the biggest duplicate groups, label
conflicts, leaked images) and `inspect.json` are written there.
"""

from __future__ import annotations

import csv
import json
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import numpy as np

from mediscan.data.characterise import characterise
from mediscan.data.folders import ImageFolder, scan_folder
from mediscan.data.hashing import (
    DEFAULT_MAX_DISTANCE,
    DEFAULT_MIN_CORRELATION,
    THUMB,
    Hashes,
    compute_hashes,
    confirmed_near_pairs,
    exact_pairs,
    hamming,
    thumbnail_correlation,
    union_groups,
)
from mediscan.data.readers import suffix_of
from mediscan.report.contact_sheets import write_sheets

SPLIT_ORDER = ("train", "val", "test")
EXAMPLES = 10  # examples listed per finding in the report


@dataclass(frozen=True)
class Pairs:
    """Duplicate pairs over the hashed items: i < j, Hamming distance, thumbnail correlation."""

    i: np.ndarray
    j: np.ndarray
    distance: np.ndarray
    correlation: np.ndarray
    exact: np.ndarray  # bool: identical decoded pixels

    def __len__(self) -> int:
        return len(self.i)

    def where(self, keep: np.ndarray) -> Pairs:
        """The pairs where `keep` is True."""
        return Pairs(self.i[keep], self.j[keep], self.distance[keep], self.correlation[keep],
                     self.exact[keep])


# --- entry point ------------------------------------------------------------------------------

def inspect_folder(root: str | os.PathLike[str], *, against: Sequence[str | os.PathLike[str]] = (),
                   max_distance: int = DEFAULT_MAX_DISTANCE,
                   min_correlation: float = DEFAULT_MIN_CORRELATION,
                   workers: int | None = None, progress: bool = True,
                   out: str | os.PathLike[str] | None = None,
                   cache_dir: str | os.PathLike[str] | None = None, shortcuts: bool = True) -> dict:
    """The inspection report of the data set at `root` (and its leakage into `against`);
    with `shortcuts`, the shortcut audit (`mediscan.data.shortcut_audit`) too."""
    clock = {"start": time.perf_counter()}
    folders = [scan_folder(root), *(scan_folder(path) for path in against)]
    clock["scan"] = time.perf_counter()
    hashes = [compute_hashes(f, workers=workers, progress=progress,
                             cache_dir=Path(cache_dir) if cache_dir else None) for f in folders]
    clock["hash"] = time.perf_counter()
    merged, starts = concat_hashes(hashes), np.cumsum([0, *(len(f) for f in folders)])
    owner = np.repeat(np.arange(len(folders)), np.diff(starts))
    pairs = duplicate_pairs(merged, max_distance=max_distance, min_correlation=min_correlation)
    data, n = folders[0], len(folders[0])
    report = build_report(data, hashes[0], pairs.where((pairs.i < n) & (pairs.j < n)),
                          file_sizes(data))
    report["settings"] = {"max_distance": max_distance, "min_correlation": min_correlation}
    report["against"] = [
        leakage_against(data, other, pairs.where((owner[pairs.i] == 0) & (owner[pairs.j] == k)),
                        offset=int(starts[k]))
        for k, other in enumerate(folders[1:], start=1)]
    report["preprocessing"] = _preprocessing(data)
    clock["analyse"] = time.perf_counter()
    if shortcuts:
        from mediscan.data.shortcut_audit import audit_folder

        within = pairs.where(pairs.j < n)
        report["shortcuts"] = audit_folder(data, union_groups(n, zip(within.i, within.j)),
                                           workers=workers, progress=progress,
                                           cache_dir=Path(cache_dir) if cache_dir else None)
        clock["shortcuts"] = time.perf_counter()
    if out is not None:
        report["sheets"] = write_sheets(Path(out), folders, merged, owner, report)
        for k, leak in enumerate(report["against"], start=1):
            leak["file"] = str(write_leak_csv(Path(out) / f"leakage-{k}.csv", leak["leaked"]))
    clock["sheets"] = time.perf_counter()
    report["seconds"] = _durations(clock)
    if out is not None:
        (Path(out) / "inspect.json").write_text(json.dumps(report, indent=1))
    return report


def _preprocessing(folder: ImageFolder) -> dict | None:
    """The preprocessing `train` would choose for the folder (None when no image can be read)."""
    try:
        return characterise(folder).to_dict()
    except ValueError:
        return None


def _durations(clock: dict[str, float]) -> dict[str, float]:
    steps = list(clock)
    timings = {step: round(clock[step] - clock[before], 2) for before, step in pairwise(steps)}
    return {**timings, "total": round(clock[steps[-1]] - clock["start"], 2)}


# --- hashes and pairs -------------------------------------------------------------------------

def concat_hashes(parts: Sequence[Hashes]) -> Hashes:
    """The hashes of several folders as one (indices run on from one folder to the next)."""
    offsets = np.cumsum([0, *(len(h.exact) for h in parts)])
    return Hashes(
        exact=[e for h in parts for e in h.exact],
        phash=np.concatenate([h.phash for h in parts]).astype(np.uint64),
        ok=np.concatenate([h.ok for h in parts]).astype(bool),
        errors={int(i + offset): reason for h, offset in zip(parts, offsets)
                for i, reason in h.errors.items()},
        shapes=[s for h in parts for s in h.shapes],
        thumbs=np.concatenate([h.thumbs.reshape(-1, THUMB, THUMB) for h in parts]),
    )


def duplicate_pairs(hashes: Hashes, *, max_distance: int = DEFAULT_MAX_DISTANCE,
                    min_correlation: float = DEFAULT_MIN_CORRELATION) -> Pairs:
    """Exact pairs (identical pixels) and confirmed near pairs, each pair once."""
    found = {(i, j) for i, j, _ in exact_pairs(hashes.exact, hashes.ok)}
    found |= {(i, j) for i, j, _ in confirmed_near_pairs(
        hashes, max_distance=max_distance, min_correlation=min_correlation)}
    ij = np.array(sorted(found), dtype=np.int64).reshape(-1, 2)
    i, j = ij[:, 0], ij[:, 1]
    exact = np.array([hashes.exact[a] == hashes.exact[b] for a, b in ij], dtype=bool)
    correlation = thumbnail_correlation(hashes.thumbs[i], hashes.thumbs[j]) if len(ij) else \
        np.zeros(0, np.float32)
    return Pairs(i, j, hamming(hashes.phash[i], hashes.phash[j]).reshape(-1),
                 np.where(exact, 1.0, correlation).astype(np.float64), exact)


def group_members(n: int, pairs: Pairs) -> list[np.ndarray]:
    """Connected components of the pairs with two or more members, biggest first."""
    groups = union_groups(n, zip(pairs.i.tolist(), pairs.j.tolist()))
    counts = np.unique(groups, return_counts=True)[1]
    order = np.argsort(groups, kind="stable")
    members = np.split(order, np.cumsum(counts)[:-1])
    found = [m for m, c in zip(members, counts) if c > 1]
    return sorted(found, key=lambda m: (-len(m), int(m[0])))


# --- the report -------------------------------------------------------------------------------

def build_report(folder: ImageFolder, hashes: Hashes, pairs: Pairs,
                 sizes: dict[str, int]) -> dict:
    """Every finding about one folder, from its hashes and its duplicate pairs (pure)."""
    groups = group_members(len(folder), pairs)
    return {
        "root": str(folder.root),
        "images": len(folder),
        "readable": int(hashes.ok.sum()),
        "classes": list(folder.classes),
        "counts": class_counts(folder),
        "sizes": size_summary(hashes),
        "files": file_summary(sizes),
        "problems": problems(folder, hashes),
        "exact_duplicates": exact_summary(folder, hashes),
        "near_duplicates": near_summary(folder, hashes, groups, pairs),
        "unique_images": int(hashes.ok.sum()) - sum(len(g) - 1 for g in groups),
        "label_conflicts": label_conflicts(folder, groups, pairs),
        "split_leakage": split_leakage(folder, pairs),
    }


def class_counts(folder: ImageFolder) -> dict[str, dict]:
    """Per split given by the layout (and "all"): images per class, total, imbalance ratio."""
    labels = folder.labels
    splits = np.array([s.split or "" for s in folder.samples])
    present = [s for s in SPLIT_ORDER if s in folder.splits_present]
    result = {split: _counts(folder.classes, labels[splits == split]) for split in present}
    result["all"] = _counts(folder.classes, labels)
    return result


def _counts(classes: list[str], labels: np.ndarray) -> dict:
    counts = np.bincount(labels, minlength=len(classes))
    nonzero = counts[counts > 0]
    return {"total": int(counts.sum()),
            "per_class": {name: int(k) for name, k in zip(classes, counts)},
            "imbalance_ratio": round(float(nonzero.max() / nonzero.min()), 3)
            if len(nonzero) else None,
            "missing_classes": [name for name, k in zip(classes, counts) if k == 0]}


def size_summary(hashes: Hashes, top: int = 10) -> dict:
    """Image sizes (WxH histogram, most common first) and grey/colour from decoded shapes."""
    shapes = [s for s, ok in zip(hashes.shapes, hashes.ok) if ok]
    sizes = Counter(f"{s[1]}x{s[0]}" for s in shapes)
    common = dict(sizes.most_common(top))
    widths = np.array([s[1] for s in shapes]) if shapes else np.zeros(1)
    heights = np.array([s[0] for s in shapes]) if shapes else np.zeros(1)
    return {
        "distinct": len(sizes),
        "most_common": common,
        "other": sum(sizes.values()) - sum(common.values()),
        "width": {"min": int(widths.min()), "median": float(np.median(widths)),
                  "max": int(widths.max())},
        "height": {"min": int(heights.min()), "median": float(np.median(heights)),
                   "max": int(heights.max())},
        "modes": {"grey": sum(len(s) == 2 for s in shapes),
                  "colour": sum(len(s) == 3 for s in shapes)},
    }


def file_sizes(folder: ImageFolder) -> dict[str, int]:
    """Bytes of every file the samples come from (a volume or archive counted once)."""
    sizes = {}
    for sample in folder.samples:
        name = sample.path.as_posix()
        if name not in sizes:
            try:
                sizes[name] = (folder.root / sample.path).stat().st_size
            except OSError:
                sizes[name] = 0
    return sizes


def file_summary(sizes: dict[str, int]) -> dict:
    """Files and bytes per type (suffix; extension-less files are usually DICOM)."""
    per_type: dict[str, dict[str, int]] = {}
    for name, size in sorted(sizes.items()):
        entry = per_type.setdefault(suffix_of(name) or "(none)", {"files": 0, "bytes": 0})
        entry["files"] += 1
        entry["bytes"] += size
    values = np.array(list(sizes.values()) or [0])
    return {"files": len(sizes), "bytes": int(values.sum()), "types": per_type,
            "bytes_per_file": {"min": int(values.min()), "median": float(np.median(values)),
                               "max": int(values.max())}}


def problems(folder: ImageFolder, hashes: Hashes) -> dict:
    """Unreadable samples by name (empty, truncated, other) and the entries the scan skipped."""
    unreadable = [{"key": folder.samples[i].key, "problem": _problem_kind(reason),
                   "reason": reason} for i, reason in sorted(hashes.errors.items())]
    skipped = [{"path": _relative(folder.root, s.path), "reason": s.reason}
                for s in folder.skipped]
    return {"unreadable": unreadable, "skipped": skipped,
            "by_kind": dict(Counter(u["problem"] for u in unreadable))}


def _problem_kind(reason: str) -> str:
    text = reason.lower()
    for kind in ("empty", "truncated", "not a recognised image", "too large"):
        if kind in text:
            return kind.replace("not a recognised image", "not an image")
    return "unreadable"


def _relative(root: Path, path: Path) -> str:
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _member(folder: ImageFolder, i: int) -> dict:
    sample = folder.samples[int(i)]
    return {"key": sample.key, "class": folder.classes[sample.label], "split": sample.split}


def exact_summary(folder: ImageFolder, hashes: Hashes) -> dict:
    """Groups of identical decoded pixels: how many, extra copies, sizes, biggest examples."""
    by_hash: dict[str, list[int]] = {}
    for i, key in enumerate(hashes.exact):
        if hashes.ok[i]:
            by_hash.setdefault(key, []).append(i)
    groups = sorted((m for m in by_hash.values() if len(m) > 1), key=lambda m: (-len(m), m[0]))
    return {"groups": len(groups), "extra_copies": sum(len(m) - 1 for m in groups),
            "images": sum(len(m) for m in groups),
            "size_distribution": _histogram(len(m) for m in groups),
            "examples": [[_member(folder, i) for i in m] for m in groups[:EXAMPLES]]}


def near_summary(folder: ImageFolder, hashes: Hashes, groups: list[np.ndarray],
                 pairs: Pairs) -> dict:
    """Duplicate groups that hold two or more different images (not only exact copies)."""
    near = [g for g in groups if len({hashes.exact[i] for i in g}) > 1]
    return {"groups": len(near), "images": sum(len(g) for g in near),
            "extra_images": sum(len(g) - 1 for g in near),
            "distinct_images": sum(len({hashes.exact[i] for i in g}) for g in near),
            "size_distribution": _histogram(len(g) for g in near),
            "distance_distribution": _histogram(pairs.distance[~pairs.exact].tolist()),
            "examples": [_group_example(folder, g, pairs) for g in near[:EXAMPLES]]}


def _group_example(folder: ImageFolder, members: np.ndarray, pairs: Pairs,
                   limit: int = 20) -> dict:
    inside = np.isin(pairs.i, members) & np.isin(pairs.j, members)
    chosen = pairs.where(inside)
    return {"members": [_member(folder, i) for i in members],
            "pairs": [{"a": folder.samples[a].key, "b": folder.samples[b].key,
                       "distance": int(d), "correlation": round(float(r), 4), "exact": bool(e)}
                      for a, b, d, r, e in zip(chosen.i[:limit], chosen.j[:limit],
                                               chosen.distance[:limit],
                                               chosen.correlation[:limit], chosen.exact[:limit])]}


def _histogram(values) -> dict[str, int]:
    return {str(k): v for k, v in sorted(Counter(values).items())}


def label_conflicts(folder: ImageFolder, groups: list[np.ndarray], pairs: Pairs) -> dict:
    """Duplicate groups whose members carry different classes: every one is listed."""
    labels = folder.labels
    found = [g for g in groups if len(set(labels[g].tolist())) > 1]
    return {"groups": len(found),
            "images": sum(len(g) for g in found),
            "items": [{**_group_example(folder, g, pairs),
                       "classes": sorted({folder.classes[k] for k in labels[g]})}
                      for g in found]}


def split_leakage(folder: ImageFolder, pairs: Pairs) -> dict | None:
    """For each later split (val, test): its images that duplicate an earlier split's images."""
    splits = np.array([s.split or "" for s in folder.samples])
    present = [s for s in SPLIT_ORDER if s in folder.splits_present]
    if len(present) < 2:
        return None
    result = {}
    for k, later in enumerate(present[1:], start=1):
        earlier = present[:k]
        a, b = splits[pairs.i], splits[pairs.j]
        crossing = (np.isin(a, earlier) & (b == later)) | (np.isin(b, earlier) & (a == later))
        chosen = pairs.where(crossing)
        flip = splits[chosen.i] == later  # put the earlier split's image first
        first, second = np.where(flip, chosen.j, chosen.i), np.where(flip, chosen.i, chosen.j)
        oriented = Pairs(first, second, chosen.distance, chosen.correlation, chosen.exact)
        result[f"{later} vs {'+'.join(earlier)}"] = _leak_summary(
            oriented, int((splits == later).sum()), lambda i: _member(folder, i),
            lambda i: _member(folder, i))
    return result


def leakage_against(data: ImageFolder, other: ImageFolder, pairs: Pairs, *, offset: int) -> dict:
    """Images of `other` that duplicate images of `data` (pairs: data index i, other offset + j)."""
    local = Pairs(pairs.i, pairs.j - offset, pairs.distance, pairs.correlation, pairs.exact)
    summary = _leak_summary(local, len(other), lambda i: _member(data, i),
                            lambda i: _member(other, i))
    comparable = set(data.classes) == set(other.classes)
    same = [data.classes[data.samples[a].label] == other.classes[other.samples[b].label]
            for a, b in zip(local.i, local.j)]
    return {"root": str(other.root), **summary, "labels_comparable": comparable,
            "class_mismatches": int(len(same) - sum(same)) if comparable else None,
            "leaked": leaked_files(data, other, local)}


def leaked_files(data: ImageFolder, other: ImageFolder, pairs: Pairs) -> list[dict]:
    """Every image of `other` that duplicates one of `data` (pairs: i in data, j in other), once,
    with its closest match: an exact copy first, else the smallest pHash distance."""
    order = np.lexsort((-pairs.correlation, pairs.distance, ~pairs.exact))
    rows: dict[int, dict] = {}
    for k in order:
        j = int(pairs.j[k])
        if j not in rows:
            source = data.samples[int(pairs.i[k])]
            rows[j] = {"file": other.samples[j].key, "class": other.classes[other.samples[j].label],
                       "matched": source.key, "matched_class": data.classes[source.label],
                       "matched_split": source.split or "", "kind": "exact" if pairs.exact[k] else "near",
                       "distance": int(pairs.distance[k]), "correlation": round(float(pairs.correlation[k]), 4)}
    return [rows[j] for j in sorted(rows)]


def write_leak_csv(path: Path, rows: list[dict]) -> Path:
    """The leaked-file list as CSV: one row per leaked file with its matched image."""
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = ["file", "class", "matched", "matched_class", "matched_split", "kind", "distance",
               "correlation"]
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def _leak_summary(pairs: Pairs, total: int, describe_a: Callable[[int], dict],
                  describe_b: Callable[[int], dict]) -> dict:
    """How many of the `total` images on side b duplicate side a (exactly or only nearly)."""
    leaked = np.unique(pairs.j)
    exact = np.unique(pairs.j[pairs.exact])
    order = np.lexsort((pairs.distance, ~pairs.exact))
    return {"images": len(leaked), "of": int(total),
            "fraction": round(len(leaked) / total, 4) if total else 0.0,
            "exact": len(exact), "near_only": len(leaked) - len(exact),
            "pairs": len(pairs),
            "examples": [{"leaked": describe_b(int(pairs.j[k])), "duplicate_of":
                          describe_a(int(pairs.i[k])), "distance": int(pairs.distance[k]),
                          "correlation": round(float(pairs.correlation[k]), 4),
                          "exact": bool(pairs.exact[k])} for k in order[:EXAMPLES]]}
