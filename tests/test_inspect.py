"""mediscan.data.inspect and `mediscan inspect`: duplicates, conflicts, leakage, problems, sheets."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from helpers_images import resized_jpeg_copy, textured, write_image, write_truncated_jpeg
from PIL import Image

from mediscan.data.inspect import _problem_kind, inspect_folder


def _png(path, seed: int) -> np.ndarray:
    return write_image(path, "L", pixels=textured(seed))


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """DATA (Training/Testing) and OTHER with planted duplicates, a conflict, leaks and junk."""
    base = tmp_path_factory.mktemp("inspect")
    train, test, other = base / "data" / "Training", base / "data" / "Testing", base / "other"
    originals = {k: _png(train / "a" / f"a{k}.png", 10 + k) for k in range(6)}
    b0 = _png(train / "b" / "b0.png", 20)
    for k in range(1, 6):
        _png(train / "b" / f"b{k}.png", 20 + k)
    resized_jpeg_copy(originals[0], train / "a" / "a0_copy.jpg")  # near duplicate
    write_image(train / "b" / "conflict.bmp", "L", pixels=originals[1])  # same image, class b
    write_truncated_jpeg(train / "a" / "cut.jpg")
    (train / "a" / "empty.png").write_bytes(b"")
    (train / "a" / "notes.txt").write_text("not an image")
    (train / "b" / ".DS_Store").write_bytes(b"\0")
    write_image(test / "a" / "t0.png", "L", pixels=originals[2])  # leaks from Training
    _png(test / "a" / "t1.png", 30)
    _png(test / "b" / "t2.png", 31)
    _png(test / "b" / "t3.png", 32)
    resized_jpeg_copy(b0, other / "b" / "o0.jpg", scale=0.75, quality=80)  # near leak, same class
    _png(other / "a" / "o1.png", 40)
    write_image(other / "b" / "o2.png", "L", pixels=originals[3])  # exact leak, other class
    out = base / "out"
    report = inspect_folder(base / "data", against=[other], workers=1, progress=False, out=out,
                            cache_dir=base / "cache")
    return report, out


def test_counts_sizes_and_files(planted):
    report, _ = planted
    assert report["images"] == 20 and report["readable"] == 18
    assert report["classes"] == ["a", "b"]
    counts = report["counts"]
    assert list(counts) == ["train", "test", "all"]
    assert counts["train"]["per_class"] == {"a": 9, "b": 7}
    assert counts["test"]["per_class"] == {"a": 2, "b": 2}
    assert counts["train"]["imbalance_ratio"] == pytest.approx(9 / 7, abs=1e-3)
    assert report["sizes"]["modes"] == {"grey": 18, "colour": 0}
    assert report["sizes"]["most_common"] == {"64x64": 17, "96x96": 1}
    types = report["files"]["types"]
    assert {t: v["files"] for t, v in types.items()} == {".bmp": 1, ".jpg": 2, ".png": 17}
    assert report["files"]["bytes"] == sum(v["bytes"] for v in types.values())


def test_unreadable_and_skipped_files_are_named(planted):
    problems = planted[0]["problems"]
    assert [(u["key"], u["problem"]) for u in problems["unreadable"]] == [
        ("Training/a/cut.jpg", "truncated"), ("Training/a/empty.png", "empty")]
    assert {s["path"] for s in problems["skipped"]} == {"Training/a/notes.txt",
                                                       "Training/b/.DS_Store"}


def test_exact_and_near_duplicates(planted):
    report = planted[0]
    exact = report["exact_duplicates"]
    assert (exact["groups"], exact["extra_copies"], exact["size_distribution"]) == (2, 2, {"2": 2})
    assert sorted(sorted(m["key"] for m in group) for group in exact["examples"]) == [
        ["Testing/a/t0.png", "Training/a/a2.png"], ["Training/a/a1.png", "Training/b/conflict.bmp"]]
    near = report["near_duplicates"]
    assert near["groups"] == 1 and near["size_distribution"] == {"2": 1}
    (example,) = near["examples"]
    assert {m["key"] for m in example["members"]} == {"Training/a/a0.png", "Training/a/a0_copy.jpg"}
    (pair,) = example["pairs"]
    assert not pair["exact"] and pair["distance"] <= 8 and pair["correlation"] >= 0.99
    assert report["unique_images"] == 18 - 3


def test_label_conflict_is_listed(planted):
    conflicts = planted[0]["label_conflicts"]
    assert conflicts["groups"] == 1
    (item,) = conflicts["items"]
    assert item["classes"] == ["a", "b"]
    assert {(m["key"], m["class"]) for m in item["members"]} == {
        ("Training/a/a1.png", "a"), ("Training/b/conflict.bmp", "b")}


def test_leakage_between_splits(planted):
    leakage = planted[0]["split_leakage"]
    assert list(leakage) == ["test vs train"]
    leak = leakage["test vs train"]
    assert (leak["images"], leak["of"], leak["exact"], leak["near_only"]) == (1, 4, 1, 0)
    (example,) = leak["examples"]
    assert example["leaked"]["key"] == "Testing/a/t0.png"
    assert example["duplicate_of"]["key"] == "Training/a/a2.png"


def test_leakage_against_another_folder(planted):
    (leak,) = planted[0]["against"]
    assert leak["root"].endswith("other")
    assert (leak["images"], leak["of"], leak["exact"], leak["near_only"]) == (2, 3, 1, 1)
    assert leak["class_mismatches"] == 1
    found = {(e["leaked"]["key"], e["duplicate_of"]["key"], e["exact"]) for e in leak["examples"]}
    assert found == {("b/o2.png", "Training/a/a3.png", True),
                     ("b/o0.jpg", "Training/b/b0.png", False)}
    assert leak["labels_comparable"] is True
    listed = [(r["file"], r["matched"], r["kind"], r["matched_class"]) for r in leak["leaked"]]
    assert listed == [("b/o0.jpg", "Training/b/b0.png", "near", "b"),
                      ("b/o2.png", "Training/a/a3.png", "exact", "a")]
    with open(leak["file"]) as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["file"], r["matched"], r["kind"]) for r in rows] == [row[:3] for row in listed]


def test_leaked_files_are_all_listed_and_other_class_names_not_compared(tmp_path):
    originals = [_png(tmp_path / "data" / ("a" if k % 2 else "b") / f"{k}.png", 60 + k) for k in range(14)]
    for k in range(12):  # more leaks than the report's examples
        write_image(tmp_path / "other" / ("yes" if k % 3 else "no") / f"copy{k:02d}.png", "L",
                    pixels=originals[k])
    report = inspect_folder(tmp_path / "data", against=[tmp_path / "other"], workers=1, progress=False,
                            out=tmp_path / "out", cache_dir=tmp_path / "cache", shortcuts=False)
    (leak,) = report["against"]
    assert leak["images"] == 12 and len(leak["examples"]) == 10 and len(leak["leaked"]) == 12
    assert leak["labels_comparable"] is False and leak["class_mismatches"] is None
    with open(tmp_path / "out" / "leakage-1.csv") as handle:
        assert [r["file"] for r in csv.DictReader(handle)] == sorted(  # in the folder's order
            f"{'yes' if k % 3 else 'no'}/copy{k:02d}.png" for k in range(12))


def test_report_is_json_and_written_with_contact_sheets(planted):
    report, out = planted
    assert json.loads(json.dumps(report)) == report  # plain JSON types only
    assert json.loads((out / "inspect.json").read_text()) == report
    assert set(report["sheets"]) == {"samples", "duplicates", "conflicts", "leakage-1"}
    for path in report["sheets"].values():
        with Image.open(path) as sheet:
            assert sheet.format == "PNG" and sheet.width >= 128 and sheet.height >= 128


def test_clean_folder_has_nothing_to_report(tmp_path):
    for label in ("x", "y"):
        for k in range(3):
            _png(tmp_path / "data" / label / f"{k}.png", 100 * (label == "y") + k)
    report = inspect_folder(tmp_path / "data", workers=1, progress=False, out=tmp_path / "out",
                            cache_dir=tmp_path / "cache")
    assert report["exact_duplicates"]["groups"] == report["near_duplicates"]["groups"] == 0
    assert report["label_conflicts"]["groups"] == 0 and report["split_leakage"] is None
    assert list(report["counts"]) == ["all"] and report["against"] == []
    assert set(report["sheets"]) == {"samples"}


@pytest.mark.parametrize("reason, kind", [
    ("image file is truncated (the file is damaged ...)", "truncated"),
    ("the file is empty (0 bytes; re-export or remove it)", "empty"),
    ("not a recognised image (expected JPEG, ...)", "not an image"),
    ("image is too large (7000x7000 = ...)", "too large"),
    ("not a readable DICOM file (...)", "unreadable"),
])
def test_problem_kinds(reason, kind):
    assert _problem_kind(reason) == kind


def test_cli_prints_json_on_stdout_and_a_summary_on_stderr(planted, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from mediscan.cli import app

    report = planted[0]
    monkeypatch.setenv("MEDISCAN_CACHE", str(tmp_path / "cache"))
    data, other = report["root"], report["against"][0]["root"]
    result = CliRunner().invoke(app, ["inspect", data, "--against", other, "--json",
                                      "--no-progress", "--workers", "1"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert printed["label_conflicts"] == report["label_conflicts"]
    assert printed["against"][0]["images"] == 2
    assert "label conflicts" in result.stderr and "duplicates" in result.stderr


def test_cli_names_a_missing_folder(tmp_path):
    from typer.testing import CliRunner

    from mediscan.cli import app

    result = CliRunner().invoke(app, ["inspect", str(tmp_path / "nope"), "--no-progress"])
    assert result.exit_code == 2 and "nope: no such folder" in " ".join(result.output.split())
