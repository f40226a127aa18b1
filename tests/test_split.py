"""mediscan.data.split: stratified, seeded, duplicate groups never straddle splits, split.json."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers_images import make_class_folder

from mediscan.data.folders import scan_folder
from mediscan.data.split import SPLITS, Split, stratified_split


def _labels(counts: list[int]) -> np.ndarray:
    return np.repeat(np.arange(len(counts)), counts)


def _where(parts: dict[str, np.ndarray], n: int) -> np.ndarray:
    """The split name of each index; every index must appear exactly once."""
    where = np.full(n, "", dtype=object)
    for name, indices in parts.items():
        assert (where[indices] == "").all(), "an index is in two splits"
        where[indices] = name
    assert (where != "").all(), "an index is in no split"
    return where


@pytest.mark.parametrize("seed", range(5))
def test_groups_never_straddle_splits(seed):
    rng = np.random.default_rng(seed)
    labels = _labels([300, 200, 120])
    groups = rng.integers(0, 150, len(labels))  # groups of ~4, some across classes
    where = _where(stratified_split(labels, groups=groups, seed=seed), len(labels))
    for g in np.unique(groups):
        assert len(set(where[groups == g])) == 1, f"group {g} straddles"


@pytest.mark.parametrize("counts, fractions", [
    ([500, 300, 200], (0.8, 0.1, 0.1)),
    ([400, 400], (0.7, 0.15, 0.15)),
    ([90, 30], (0.5, 0.5, 0.0)),
    ([60, 60, 60], (1.0, 0.0, 0.0)),
])
def test_each_class_is_split_in_the_given_fractions(counts, fractions):
    labels = _labels(counts)
    parts = stratified_split(labels, fractions=fractions, seed=3)
    for label, count in enumerate(counts):
        for name, fraction in zip(SPLITS, fractions):
            got = int((labels[parts[name]] == label).sum())
            assert abs(got - fraction * count) <= 1, (label, name, got)


def test_fractions_hold_with_groups():
    rng = np.random.default_rng(0)
    labels = _labels([1000, 600])
    groups = np.concatenate([rng.integers(0, 250, 1000), 1000 + rng.integers(0, 150, 600)])
    parts = stratified_split(labels, groups=groups, seed=1)
    for name, fraction in zip(SPLITS, (0.8, 0.1, 0.1)):
        assert abs(len(parts[name]) / len(labels) - fraction) < 0.02


def test_same_seed_same_split_other_seed_other_split():
    labels = _labels([100, 80, 60])
    first, again = stratified_split(labels, seed=7), stratified_split(labels, seed=7)
    other = stratified_split(labels, seed=8)
    for name in SPLITS:
        np.testing.assert_array_equal(first[name], again[name])
        assert first[name].dtype == np.int64 and (np.diff(first[name]) > 0).all()
    assert any(not np.array_equal(first[n], other[n]) for n in SPLITS)


@pytest.mark.parametrize("count, expected", [
    (1, {"train": 1, "val": 0, "test": 0}),
    (2, {"train": 2, "val": 0, "test": 0}),
    (3, {"train": 1, "val": 1, "test": 1}),  # val and test each get one when there are 3 groups
    (5, {"train": 3, "val": 1, "test": 1}),
])
def test_tiny_classes(count, expected):
    labels = np.concatenate([_labels([50]), np.full(count, 1)])
    parts = stratified_split(labels, seed=0)
    _where(parts, len(labels))
    assert {name: int((labels[parts[name]] == 1).sum()) for name in SPLITS} == expected


def test_empty_input():
    parts = stratified_split([], seed=0)
    assert all(len(parts[name]) == 0 for name in SPLITS)


@pytest.mark.parametrize("fractions", [(0.8, 0.2), (0.5, 0.5, 0.5), (1.2, -0.1, -0.1)])
def test_invalid_fractions(fractions):
    with pytest.raises(ValueError, match="fractions"):
        stratified_split([0, 1, 0, 1], fractions=fractions)


# --- Split: keys, split.json --------------------------------------------------------------------

@pytest.fixture
def folder(tmp_path):
    return scan_folder(make_class_folder(tmp_path / "data", ["no", "yes"], 10, size=(8, 8)))


def test_split_round_trips_through_json(folder, tmp_path):
    parts = stratified_split(folder.labels, seed=2)
    split = Split.from_indices(folder, parts, seed=2, fractions=(0.8, 0.1, 0.1),
                               method="stratified, duplicate-grouped")
    assert split.train == sorted(split.train, key=[s.key for s in folder.samples].index)
    assert split.fractions == [0.8, 0.1, 0.1]
    split.save(tmp_path / "split.json")
    assert json.loads((tmp_path / "split.json").read_text())["seed"] == 2
    loaded = Split.load(tmp_path / "split.json")
    assert loaded == split
    indices = loaded.indices(folder)
    for name in SPLITS:
        np.testing.assert_array_equal(indices[name], np.sort(parts[name]))


def test_split_indices_name_keys_the_folder_lacks(folder, tmp_path):
    split = Split.from_indices(folder, stratified_split(folder.labels, seed=0))
    split.test.append("yes/gone.png")
    with pytest.raises(ValueError, match=r"1 file\(s\).*yes/gone.png"):
        split.indices(folder)
