"""Evaluation that knows what the model has seen: copies of training images in external data."""

from __future__ import annotations

import csv
import json
import shutil

import pytest
from helpers_images import resized_jpeg_copy, textured, write_image
from typer.testing import CliRunner

from mediscan.cli import app
from test_export import CLASSES, make_run

CLI = CliRunner()


@pytest.fixture
def run_and_other(tmp_path, monkeypatch):
    """A tiny run (12 images: 8 train, 2 val, 2 test) and an external folder of 7 images:
    an exact copy (other format) of a train image, a resized JPEG copy of a val image,
    a copy of a test image (never seen) and four new images."""
    monkeypatch.setenv("MEDISCAN_CACHE", str(tmp_path / "cache"))
    run = make_run(tmp_path / "run")
    pixels, keys = {}, []
    for i in range(12):
        key = f"{CLASSES[i % 3]}/{i}.png"
        pixels[key] = write_image(run / "data" / key, "L", pixels=textured(100 + i))
        keys.append(key)
    (run / "split.json").write_text(json.dumps({"train": keys[:8], "val": keys[8:10], "test": keys[10:]}))
    other = tmp_path / "other"
    write_image(other / "glioma" / "copy_of_0.bmp", "L", pixels=pixels["glioma/0.png"])
    resized_jpeg_copy(pixels[keys[8]], other / CLASSES[8 % 3] / "resized_val.jpg", scale=1.5, quality=70)
    write_image(other / CLASSES[10 % 3] / "copy_of_test.png", "L", pixels=pixels[keys[10]])
    for k in range(4):
        write_image(other / CLASSES[k % 3] / f"new{k}.png", "L", pixels=textured(500 + k))
    return run, other, keys


def _rows(path):
    with open(path) as handle:
        return list(csv.DictReader(handle))


def test_evaluate_reports_whole_folder_and_unseen_part_and_lists_seen_files(run_and_other):
    run, other, keys = run_and_other
    result = CLI.invoke(app, ["evaluate", str(run), str(other), "--no-progress", "--resamples", "50"])
    assert result.exit_code == 0, result.output
    doc = json.loads((run / "evaluations" / "other.json").read_text())
    seen = doc["seen"]
    assert seen["checked"] and (seen["images"], seen["of"], seen["unseen"]) == (2, 7, 5)
    assert (seen["exact"], seen["near"]) == (1, 1) and seen["by_split"] == {"train": 1, "val": 1}
    assert doc["metrics"]["n"] == 7 and doc["unseen_metrics"]["n"] == 5
    rows = _rows(run / "evaluations" / "other_seen.csv")
    assert [(r["file"], r["matched"], r["kind"], r["matched_split"]) for r in rows] == [
        ("glioma/copy_of_0.bmp", "glioma/0.png", "exact", "train"),
        (f"{CLASSES[8 % 3]}/resized_val.jpg", keys[8], "near", "val")]
    assert seen["file"] == str(run / "evaluations" / "other_seen.csv")
    assert "seen by the model: 2 of 7 images" in result.output
    assert "whole folder vs its unseen part" in result.output and "unseen (5)" in result.output
    html = (run / "report.html").read_text()
    assert "Seen by the model: 2 of 7 images" in html and "On the 5 unseen images" in html


def test_evaluate_json_and_unreachable_training_data(run_and_other):
    run, other, _ = run_and_other
    shutil.move(run / "data", run / "elsewhere")
    result = CLI.invoke(app, ["evaluate", str(run), str(other), "--json", "--no-progress", "--resamples", "20"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["seen"]["checked"] is False and "is not on this machine" in doc["seen"]["reason"]
    assert doc["unseen_metrics"] is None and doc["metrics"]["n"] == 7
    assert "not checked for images the model was trained on" in result.output
    assert not (run / "evaluations" / "other_seen.csv").exists()


def test_predict_json_marks_images_the_model_was_trained_on(run_and_other):
    run, other, keys = run_and_other
    result = CLI.invoke(app, ["predict", str(run), str(other), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    marked = {p["source"].split("other/")[1]: p["seen_in_training"] for p in doc["predictions"]}
    assert doc["seen_check"] == {"checked": True, "reason": ""}
    assert marked.pop("glioma/copy_of_0.bmp") == "glioma/0.png"
    assert marked.pop(f"{CLASSES[8 % 3]}/resized_val.jpg") == keys[8]
    assert len(marked) == 5 and set(marked.values()) == {None}  # the test-split copy was never seen
    plain = json.loads(CLI.invoke(app, ["predict", str(run), str(other), "--json", "--no-seen-check"]).stdout)
    assert "seen_check" not in plain and "seen_in_training" not in plain["predictions"][0]
