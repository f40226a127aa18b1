"""mediscan.data.hashing: exact and near duplicates found, unrelated images kept apart, search exact."""

from __future__ import annotations

import numpy as np
import pytest
from helpers_images import resized_jpeg_copy, textured, write_image, write_truncated_jpeg
from PIL import Image

from mediscan.data import hashing
from mediscan.data.folders import scan_folder
from mediscan.data.hashing import (
    compute_hashes,
    confirmed_near_pairs,
    duplicate_groups,
    exact_hash,
    exact_pairs,
    hamming,
    near_pairs,
    perceptual_hash,
    union_groups,
)


def _hashes(folder, tmp_path):
    return compute_hashes(folder, workers=1, progress=False, cache_dir=tmp_path / "cache")


def _index(folder, name: str) -> int:
    return next(i for i, s in enumerate(folder.samples) if s.path.name == name)


@pytest.fixture
def planted(tmp_path):
    """One class folder: an original, its PNG/BMP/RGB twins, a resized JPEG copy, unrelated ones."""
    root = tmp_path / "data"
    original = textured(1, (96, 80))
    write_image(root / "a" / "original.png", "L", pixels=original)
    write_image(root / "a" / "twin.bmp", "L", pixels=original)
    write_image(root / "b" / "twin_rgb.png", "RGB", pixels=np.dstack([original] * 3))
    resized_jpeg_copy(original, root / "a" / "copy.jpg", scale=1.5, quality=70)
    for seed in range(2, 8):
        write_image(root / "b" / f"other_{seed}.png", "L", pixels=textured(seed, (96, 80)))
    return scan_folder(root)


def test_exact_hash_ignores_container_and_grey_stored_as_rgb(planted, tmp_path):
    hashes = _hashes(planted, tmp_path)
    twins = [_index(planted, n) for n in ("original.png", "twin.bmp", "twin_rgb.png")]
    assert len({hashes.exact[i] for i in twins}) == 1
    assert hashes.exact[_index(planted, "copy.jpg")] != hashes.exact[twins[0]]
    assert sorted((i, j) for i, j, _ in exact_pairs(hashes.exact, hashes.ok)) == \
        sorted([(twins[0], twins[1]), (twins[0], twins[2])])


def test_exact_hash_tells_shapes_apart():
    pixels = np.arange(24, dtype=np.uint8)
    assert exact_hash(pixels.reshape(4, 6)) != exact_hash(pixels.reshape(6, 4))


def test_resized_jpeg_copy_is_a_near_duplicate_and_unrelated_images_are_not(planted, tmp_path):
    hashes = _hashes(planted, tmp_path)
    original, copy = _index(planted, "original.png"), _index(planted, "copy.jpg")
    pairs = {(i, j) for i, j, _ in confirmed_near_pairs(hashes)}
    assert (min(original, copy), max(original, copy)) in pairs
    groups = duplicate_groups(planted, workers=1, cache_dir=tmp_path / "cache")
    same = {planted.samples[i].path.name for i in np.flatnonzero(groups == groups[original])}
    assert same == {"original.png", "twin.bmp", "twin_rgb.png", "copy.jpg"}
    others = [groups[_index(planted, f"other_{seed}.png")] for seed in range(2, 8)]
    assert len(set(others)) == 6 and groups[original] not in others


def test_thumbnails_compared_in_chunks_give_the_same_pairs(planted, tmp_path, monkeypatch):
    hashes = _hashes(planted, tmp_path)
    every = confirmed_near_pairs(hashes, max_distance=64, min_correlation=-1.0)  # every pair a candidate
    assert len(every) == len(planted) * (len(planted) - 1) // 2
    confirmed = confirmed_near_pairs(hashes)
    monkeypatch.setattr(hashing, "CORRELATION_CHUNK", 3)
    assert confirmed_near_pairs(hashes, max_distance=64, min_correlation=-1.0) == every
    assert confirmed_near_pairs(hashes) == confirmed and 0 < len(confirmed) < len(every)


def test_look_alike_hashes_tighten_the_distance_and_varied_ones_keep_it():
    rng = np.random.default_rng(0)
    base = np.uint64(rng.integers(0, 2**63))
    flips = rng.integers(0, 64, size=(600, 3)).astype(np.uint64)  # 3 random bits from one hash
    alike = base ^ np.bitwise_or.reduce(np.uint64(1) << flips, axis=1)
    index = np.arange(len(alike))
    distance = hashing.pairable_distance(alike, index, 8, sample=200)  # estimated on a sample, scaled
    assert distance < 8
    assert len(hashing.near_pairs(alike, distance, index)) <= 1.5 * hashing.MAX_CANDIDATES_PER_IMAGE * len(alike)
    varied = rng.integers(0, 2**63, size=600).astype(np.uint64)
    assert hashing.pairable_distance(varied, index, 8, sample=200) == 8


def test_hashes_that_share_their_segments_tighten_the_distance_to_bound_the_search():
    rng = np.random.default_rng(1)
    shared = np.uint64(rng.integers(0, 2**40))  # 40 equal low bits: every hash in one bucket of 5 segments
    hashes = (rng.integers(0, 2**24, size=3000).astype(np.uint64) << np.uint64(40)) | shared
    index = np.arange(len(hashes))
    assert hashing.search_comparisons(hashes, index, 8) > hashing.MAX_COMPARISONS_PER_IMAGE * len(hashes)
    distance = hashing.pairable_distance(hashes, index, 8)
    assert distance < 8
    assert hashing.search_comparisons(hashes, index, distance) <= hashing.MAX_COMPARISONS_PER_IMAGE * len(hashes)
    found = {(i, j) for i, j, _ in hashing.near_pairs(hashes, distance, index)}
    brute = np.argwhere(np.triu(hashing.hamming(hashes[:, None], hashes[None, :]) <= distance, k=1))
    assert found == {(int(i), int(j)) for i, j in brute}  # the tighter search still finds every pair


def test_copies_within_the_default_distance(planted):
    """Resized (x0.5..x2) and JPEG re-encoded (q30..q90) copies stay within the default."""
    original = textured(1, (96, 80))
    reference = np.array([perceptual_hash(original)], np.uint64)
    for scale in (0.5, 0.75, 1.5, 2.0):
        for quality in (30, 60, 90):
            path = resized_jpeg_copy(original, planted.root / f"x{scale}q{quality}.jpg", scale,
                                     quality)
            copy = np.asarray(Image.open(path).convert("L"))
            distance = hamming(reference, np.array([perceptual_hash(copy)], np.uint64))[0]
            assert distance <= hashing.DEFAULT_MAX_DISTANCE, (scale, quality, distance)


def test_unreadable_sample_is_reported_and_stands_alone(tmp_path):
    root = tmp_path / "data"
    write_image(root / "a" / "x.png", "L", pixels=textured(1))
    write_image(root / "a" / "y.png", "L", pixels=textured(1))
    write_truncated_jpeg(root / "a" / "cut.jpg")
    (root / "a" / "empty.png").write_bytes(b"")
    folder = scan_folder(root)
    hashes = _hashes(folder, tmp_path)
    bad = {folder.samples[i].path.name: reason for i, reason in hashes.errors.items()}
    assert set(bad) == {"cut.jpg", "empty.png"}
    assert "truncated" in bad["cut.jpg"] and "empty" in bad["empty.png"]
    assert hashes.ok.tolist() == [name not in bad for name in (s.path.name for s in folder.samples)]
    groups = duplicate_groups(folder, workers=1, cache_dir=tmp_path / "cache")
    assert len(set(groups.tolist())) == 3  # x+y together, the two broken files alone


def test_second_run_reads_the_cache_and_decodes_nothing(planted, tmp_path, monkeypatch):
    first = _hashes(planted, tmp_path)

    def fail(*args):
        raise AssertionError("decoded although cached")

    monkeypatch.setattr(hashing, "_hash_one", fail)
    second = _hashes(planted, tmp_path)
    assert second.exact == first.exact and second.shapes == first.shapes
    np.testing.assert_array_equal(second.phash, first.phash)
    np.testing.assert_array_equal(second.thumbs, first.thumbs)


def test_changed_file_is_hashed_again(planted, tmp_path):
    first = _hashes(planted, tmp_path)
    i = _index(planted, "other_2.png")
    write_image(planted.path_of(i), "L", pixels=textured(99, (96, 80)))
    second = _hashes(planted, tmp_path)
    assert second.exact[i] != first.exact[i]
    assert second.exact[:i] == first.exact[:i]


# --- the multi-index search against brute force ------------------------------------------------

def _random_hashes(n: int, seed: int, clustered: bool) -> np.ndarray:
    """Random 64-bit hashes; clustered ones are few centres with a few bits flipped each."""
    rng = np.random.default_rng(seed)
    words = rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64) * np.uint64(2) + \
        rng.integers(0, 2, n).astype(np.uint64)
    if not clustered:
        return words
    centres = words[rng.integers(0, max(1, n // 20), n)]
    flips = np.zeros(n, np.uint64)
    for _ in range(6):
        flips |= np.left_shift(np.uint64(1), rng.integers(0, 64, n).astype(np.uint64)) * \
            (rng.random(n) < 0.7).astype(np.uint64)
    return centres ^ flips


def _brute_force(hashes: np.ndarray, max_distance: int, candidates=None) -> set:
    index = np.arange(len(hashes)) if candidates is None else np.asarray(candidates)
    distance = hamming(hashes[index][:, None], hashes[index][None, :])
    a, b = np.nonzero(np.triu(distance <= max_distance, 1))
    return {(int(min(index[i], index[j])), int(max(index[i], index[j])), int(distance[i, j]))
            for i, j in zip(a, b)}


NEAR_CASES = [  # n, max_distance, seed, clustered
    (0, 6, 0, False),
    (1, 6, 0, False),
    (300, 0, 1, True),
    (300, 3, 2, True),
    (300, 8, 3, True),
    (500, 12, 4, True),
    (400, 8, 5, False),
    (200, 63, 6, False),
    (50, 64, 7, True),
]


@pytest.mark.parametrize("n, max_distance, seed, clustered", NEAR_CASES)
def test_near_pairs_equal_brute_force(n, max_distance, seed, clustered):
    hashes = _random_hashes(n, seed, clustered)
    found = near_pairs(hashes, max_distance)
    assert found == sorted(found) and all(i < j for i, j, _ in found)
    assert set(found) == _brute_force(hashes, max_distance)


def test_near_pairs_over_candidates_only():
    hashes = _random_hashes(300, 8, clustered=True)
    candidates = np.arange(0, 300, 3)
    assert set(near_pairs(hashes, 8, candidates)) == _brute_force(hashes, 8, candidates)


def test_near_pairs_in_row_blocks_with_repeated_hashes(monkeypatch):
    monkeypatch.setattr(hashing, "BLOCK_ELEMENTS", 100)  # buckets compared a few rows at a time
    hashes = np.concatenate([np.array([7] * 50 + [7 ^ 0b1011] * 10 + [2**64 - 1] * 3, np.uint64),
                             _random_hashes(200, 9, clustered=True)])
    assert set(near_pairs(hashes, 3)) == _brute_force(hashes, 3)


def test_near_pairs_rejects_a_negative_distance():
    with pytest.raises(ValueError, match="max_distance"):
        near_pairs(np.zeros(3, np.uint64), -1)


@pytest.mark.parametrize("a, b, expected", [
    (0, 0, 0), (0, 1, 1), (0, 2**64 - 1, 64), (0b1010, 0b0101, 4), (2**63, 0, 1)])
def test_hamming(a, b, expected):
    assert hamming(np.array([a], np.uint64), np.array([b], np.uint64)).tolist() == [expected]


@pytest.mark.parametrize("n, pairs, expected", [
    (4, [], [0, 1, 2, 3]),
    (4, [(2, 3, 0)], [0, 1, 2, 2]),
    (5, [(3, 4, 1), (0, 4, 2)], [0, 1, 2, 0, 0]),
    (6, [(1, 2, 0), (4, 5, 0), (2, 5, 0)], [0, 1, 1, 3, 1, 1]),
])
def test_union_groups(n, pairs, expected):
    assert union_groups(n, pairs).tolist() == expected
