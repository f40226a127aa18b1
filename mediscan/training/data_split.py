"""How a training run splits its folder: given Testing/val folders as-is, the rest stratified and
duplicate-grouped, so that no image (or its near copy) is both trained on and tested on."""

from __future__ import annotations

import numpy as np

from mediscan.data.folders import ImageFolder
from mediscan.data.split import Split, stratified_split
from mediscan.progress import console
from mediscan.training.recipes import Recipe


def _groups(folder: ImageFolder, recipe: Recipe, workers: int | None, progress: bool):
    if not recipe.group_duplicates:
        return np.arange(len(folder))
    from mediscan.data.hashing import duplicate_groups

    return duplicate_groups(folder, workers=workers, progress=progress)


def _warn_leaks(folder: ImageFolder, groups: np.ndarray, parts: dict[str, np.ndarray]) -> None:
    """Tell the user when a given test folder shares images with the training images."""
    train_groups = set(groups[parts["train"]]) | set(groups[parts["val"]])
    leaked = [i for i in parts["test"] if groups[i] in train_groups]
    if leaked:
        console.print(f"[yellow]warning:[/yellow] {len(leaked)} test image(s) duplicate training "
                      "images (e.g. " + ", ".join(folder.samples[i].key for i in leaked[:3])
                      + "); run `mediscan inspect` for details — test figures will be inflated.")


def make_split(folder: ImageFolder, ok: np.ndarray, recipe: Recipe, *,
               workers: int | None = None, progress: bool = True) -> Split:
    """The run's split of the readable samples (`ok`); a Testing/test folder is kept as the test set."""
    groups = _groups(folder, recipe, workers, progress)
    given = np.array([s.split or "" for s in folder.samples])
    readable = np.flatnonzero(ok)
    test_given = readable[given[readable] == "test"]
    val_given = readable[given[readable] == "val"]
    pool = readable[~np.isin(given[readable], ["test", "val"])]
    train_f, val_f, test_f = recipe.fractions
    if len(val_given):
        val_f = 0.0
    if len(test_given):
        test_f = 0.0
    total = train_f + val_f + test_f
    fractions = (train_f / total, val_f / total, test_f / total)
    local = stratified_split(folder.labels[pool], groups=groups[pool], fractions=fractions,
                             seed=recipe.seed)
    parts = {name: pool[local[name]] for name in ("train", "val", "test")}
    parts["val"] = np.concatenate([parts["val"], val_given])
    parts["test"] = np.concatenate([parts["test"], test_given])
    if len(test_given) and recipe.group_duplicates:
        _warn_leaks(folder, groups, parts)
    method = "stratified, duplicate-grouped" if recipe.group_duplicates else "stratified"
    return Split.from_indices(folder, parts, seed=recipe.seed, fractions=recipe.fractions,
                              method=method)
