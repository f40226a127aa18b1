"""What a run has seen: which images of another folder, or which single images, duplicate the
run's own training and validation images (keys in RUN/split.json, data root in model.json).

Both use `inspect`'s hashing and its per-file cache (`mediscan.data.hashing`): identical
decoded pixels are exact copies; pHash within `DEFAULT_MAX_DISTANCE` bits confirmed by a
thumbnail correlation >= `DEFAULT_MIN_CORRELATION` are near copies (resized, re-encoded).
When the training data is not on this machine the check says so and nothing is marked.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from mediscan.data.folders import ImageFolder, scan_folder
from mediscan.data.hashing import (
    DEFAULT_MAX_DISTANCE,
    DEFAULT_MIN_CORRELATION,
    compute_hashes,
    exact_hash,
    hamming,
    perceptual_hash,
    thumbnail,
    thumbnail_correlation,
)
from mediscan.data.inspect import Pairs, concat_hashes, duplicate_pairs, leaked_files
from mediscan.run_folder import RunFolder

SEEN_SPLITS = ("train", "val")


def seen_folder(run_dir: Path, meta: dict) -> ImageFolder | str:
    """The run's training and validation samples (`split` set to train/val), or why not."""
    root = Path((meta.get("data") or {}).get("root") or "")
    run = RunFolder(run_dir)
    if not str(root) or not root.exists():
        return f"the training data {root or '(not recorded in model.json)'} is not on this machine"
    if not run.split_file.is_file():
        return f"{run.split_file} is missing, so the training images are unknown"
    split = run.read_split()
    which = {key: name for name in SEEN_SPLITS for key in getattr(split, name)}
    folder = scan_folder(root)
    samples = [replace(s, split=which[s.key]) for s in folder.samples if s.key in which]
    return ImageFolder(folder.root, folder.classes, samples, archive=folder.archive)


@dataclass
class SeenCheck:
    """Files of another folder that duplicate the run's training/validation images."""

    checked: bool
    reason: str = ""  # why nothing was checked
    training_root: str = ""
    rows: list[dict] = field(default_factory=list)  # one per seen file (`inspect.leaked_files`)

    def seen_mask(self, keys: list[str]) -> np.ndarray:
        """Per key: True when that file duplicates a training or validation image."""
        seen = {row["file"] for row in self.rows}
        return np.array([key in seen for key in keys], dtype=bool)

    def summary(self, keys: list[str], csv_path: Path | None = None) -> dict:
        """The JSON block: checked, how many of `keys` are seen (exact / near), the CSV's path."""
        mask = self.seen_mask(keys)  # rows are readable files, so all of them are among `keys`
        kinds = [row["kind"] for row in self.rows]
        return {"checked": self.checked, "reason": self.reason, "training_root": self.training_root,
                "images": int(mask.sum()), "of": len(keys), "unseen": int((~mask).sum()),
                "exact": kinds.count("exact"), "near": kinds.count("near"),
                "by_split": {s: sum(r["matched_split"] == s for r in self.rows) for s in SEEN_SPLITS},
                "file": str(csv_path) if csv_path else None}


def check_seen(run_dir: Path, meta: dict, other: ImageFolder, *, workers: int | None = None,
               progress: bool = True, cache_dir: Path | None = None) -> SeenCheck:
    """Every file of `other` that duplicates one of the run's training or validation images."""
    seen = seen_folder(run_dir, meta)
    if isinstance(seen, str):
        return SeenCheck(False, seen)
    hashes = [compute_hashes(f, workers=workers, progress=progress, cache_dir=cache_dir)
              for f in (seen, other)]
    pairs = duplicate_pairs(concat_hashes(hashes))
    n = len(seen)
    crossing = pairs.where((pairs.i < n) & (pairs.j >= n))
    local = Pairs(crossing.i, crossing.j - n, crossing.distance, crossing.correlation, crossing.exact)
    return SeenCheck(True, "", str(seen.root), leaked_files(seen, other, local))


class SeenIndex:
    """The run's training and validation hashes, to look single images up (`predict`)."""

    def __init__(self, folder: ImageFolder, *, workers: int | None = None, progress: bool = True,
                 cache_dir: Path | None = None) -> None:
        hashes = compute_hashes(folder, workers=workers, progress=progress, cache_dir=cache_dir)
        self.keys = [s.key for s in folder.samples]
        self.ok = hashes.ok
        self.exact = {h: k for h, k, ok in zip(hashes.exact, self.keys, hashes.ok) if ok}
        self.phash, self.thumbs = hashes.phash, hashes.thumbs

    def match(self, img: np.ndarray) -> str | None:
        """Key of the training/validation image `img` duplicates (exact first), else None."""
        exact = self.exact.get(exact_hash(img))
        if exact is not None:
            return exact
        distance = hamming(self.phash, np.uint64(perceptual_hash(img)))
        close = np.flatnonzero((distance <= DEFAULT_MAX_DISTANCE) & self.ok)
        if not len(close):
            return None
        thumbs = np.repeat(thumbnail(img)[None], len(close), axis=0)
        confirmed = close[thumbnail_correlation(self.thumbs[close], thumbs) >= DEFAULT_MIN_CORRELATION]
        return None if not len(confirmed) else self.keys[int(confirmed[np.argmin(distance[confirmed])])]
