"""Stratified, seeded train/val/test splits in which a duplicate group never straddles two splits."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from mediscan.files import BadFileError, read_json, write_json
from mediscan.progress import console

SPLITS = ("train", "val", "test")


def _group_table(labels: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray, list]:
    """(group ids, each group's majority label, member indices per group)."""
    ids, inverse = np.unique(groups, return_inverse=True)
    members = [[] for _ in ids]
    for i, g in enumerate(inverse):
        members[g].append(i)
    majority = np.array([np.bincount(labels[m]).argmax() for m in members])
    return ids, majority, members


def _assign_class(sizes: np.ndarray, fractions: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Split index per group of one class: largest groups first, each to the neediest split."""
    order = rng.permutation(len(sizes))
    order = order[np.argsort(-sizes[order], kind="stable")]
    target = fractions * sizes.sum()
    filled = np.zeros(len(fractions))
    assignment = np.zeros(len(sizes), dtype=int)
    needs_one = [k for k in (1, 2) if fractions[k] > 0 and len(sizes) >= 3]
    for position, g in enumerate(order):
        reserve = [k for k in needs_one if filled[k] == 0]
        remaining = len(order) - position
        if reserve and remaining <= len(reserve):
            choice = reserve[0]
        else:
            choice = int(np.argmax(target - filled - 1e-9 * np.arange(len(fractions))))
        assignment[g] = choice
        filled[choice] += sizes[g]
    return assignment


def stratified_split(labels: Sequence[int], *, groups: Sequence[int] | None = None,
                     fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0) -> dict[str, np.ndarray]:
    """Indices per split, class proportions kept; all members of a group land in one split."""
    labels = np.asarray(labels, dtype=np.int64)
    fractions = np.asarray(fractions, dtype=np.float64)
    if len(fractions) != 3 or fractions.min() < 0 or not np.isclose(fractions.sum(), 1.0):
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions}")
    groups = np.arange(len(labels)) if groups is None else np.asarray(groups)
    rng = np.random.default_rng(seed)
    _, majority, members = _group_table(labels, groups)
    sizes = np.array([len(m) for m in members])
    parts: dict[str, list[int]] = {name: [] for name in SPLITS}
    for label in np.unique(majority):
        of_class = np.flatnonzero(majority == label)
        assignment = _assign_class(sizes[of_class], fractions, rng)
        for g, split_index in zip(of_class, assignment):
            parts[SPLITS[split_index]].extend(members[g])
    return {name: np.array(sorted(idx), dtype=np.int64) for name, idx in parts.items()}


@dataclass
class Split:
    """Which sample keys went to train / val / test, and how; saved as split.json."""

    train: list[str]
    val: list[str]
    test: list[str]
    seed: int = 0
    fractions: list[float] = field(default_factory=lambda: [0.8, 0.1, 0.1])
    method: str = "stratified"

    @classmethod
    def from_indices(cls, folder, parts: dict[str, np.ndarray], **info) -> Split:
        keys = {name: [folder.samples[i].key for i in np.sort(parts[name])] for name in SPLITS}
        return cls(**keys, **{k: list(v) if isinstance(v, tuple) else v for k, v in info.items()})

    def save(self, path: str | Path) -> None:
        write_json(path, asdict(self), indent=1)

    @classmethod
    def load(cls, path: str | Path) -> Split:
        """A saved split; BadFileError names the file when it is missing, broken or not a split."""
        data = read_json(path, fix="delete it to draw a new split, or restore it from the run")
        try:
            return cls(**data)
        except TypeError as error:
            raise BadFileError(f"{path}: not a split ({error}); delete it to draw a new split, "
                               "or restore it from the run") from None

    def indices(self, folder) -> dict[str, np.ndarray]:
        """Sample indices of `folder` per split; an error names keys the folder lacks."""
        position = {s.key: i for i, s in enumerate(folder.samples)}
        result = {}
        for name in SPLITS:
            keys = getattr(self, name)
            missing = [k for k in keys if k not in position]
            if missing:
                raise ValueError(f"split.json lists {len(missing)} file(s) that are not in "
                                 f"{folder.root} (e.g. {missing[0]}); the data changed since "
                                 "the run — train again, or point to the original data")
            result[name] = np.array(sorted(position[k] for k in keys), dtype=np.int64)
        return result


def _groups(folder, group_duplicates: bool, workers: int | None, progress: bool) -> np.ndarray:
    """Duplicate-group id per sample (each sample its own group when not grouping)."""
    if not group_duplicates:
        return np.arange(len(folder))
    from mediscan.data.hashing import duplicate_groups

    return duplicate_groups(folder, workers=workers, progress=progress)


def _warn_leaks(folder, groups: np.ndarray, parts: dict[str, np.ndarray]) -> None:
    """Tell the user when a given test folder shares images with the training images."""
    train_groups = set(groups[parts["train"]]) | set(groups[parts["val"]])
    leaked = [i for i in parts["test"] if groups[i] in train_groups]
    if leaked:
        console.print(f"[yellow]warning:[/yellow] {len(leaked)} test image(s) duplicate training "
                      "images (e.g. " + ", ".join(folder.samples[i].key for i in leaked[:3])
                      + "); run `mediscan inspect` for details — test figures will be inflated.")


def split_run(folder, ok: np.ndarray, *, fractions: Sequence[float], seed: int, group_duplicates: bool,
              workers: int | None = None, progress: bool = True) -> Split:
    """A run's split of the readable samples (`ok`): given Testing/val folders as they are, the rest
    stratified and duplicate-grouped, so no image (or its near copy) is both trained and tested on."""
    groups = _groups(folder, group_duplicates, workers, progress)
    given = np.array([s.split or "" for s in folder.samples])
    readable = np.flatnonzero(ok)
    test_given = readable[given[readable] == "test"]
    val_given = readable[given[readable] == "val"]
    pool = readable[~np.isin(given[readable], ["test", "val"])]
    train_f, val_f, test_f = fractions
    if len(val_given):
        val_f = 0.0
    if len(test_given):
        test_f = 0.0
    total = train_f + val_f + test_f
    local = stratified_split(folder.labels[pool], groups=groups[pool],
                             fractions=(train_f / total, val_f / total, test_f / total), seed=seed)
    parts = {name: pool[local[name]] for name in ("train", "val", "test")}
    parts["val"] = np.concatenate([parts["val"], val_given])
    parts["test"] = np.concatenate([parts["test"], test_given])
    if len(test_given) and group_duplicates:
        _warn_leaks(folder, groups, parts)
    method = "stratified, duplicate-grouped" if group_duplicates else "stratified"
    return Split.from_indices(folder, parts, seed=seed, fractions=fractions, method=method)
