"""Shortcut audit: image properties, and flags on generated data with and without a planted cue."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage
from typer.testing import CliRunner

from mediscan.cli import app
from mediscan.data.inspect import inspect_folder
from mediscan.data.shortcuts import FEATURES, measure

CLASSES = ("disc", "ring", "square")


def head_slice(lesion: str, rng: np.random.Generator, *, size: int = 96, head_gain: float = 1.0,
               white_border: bool = False) -> np.ndarray:
    """A noisy dark background, a skull-rimmed head of random pose, a small lesion of one shape.

    The three lesions cover about the same area at the same brightness, so nothing but their
    shape tells the classes apart (unless a cue is planted)."""
    yy, xx = np.mgrid[:size, :size]
    cy, cx = rng.uniform(0.42, 0.58, 2) * size
    ry, rx = rng.uniform(0.30, 0.40, 2) * size
    r = np.sqrt(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2)
    img = rng.normal(8, 3, (size, size))
    brain = ndimage.gaussian_filter(rng.normal(0, 1, (size, size)), 2) * 60 + 110
    img = np.where(r < 1, brain * head_gain, img)
    img = np.where((r >= 0.9) & (r < 1), 190 * head_gain, img)
    ly, lx = cy + rng.uniform(-0.3, 0.3) * ry, cx + rng.uniform(-0.3, 0.3) * rx
    d = np.hypot(yy - ly, xx - lx)
    shape = {"disc": d < 4, "ring": (d >= 3) & (d < 5), "square": (abs(yy - ly) < 3.5) & (abs(xx - lx) < 3.5)}
    img[shape[lesion]] = 170 * head_gain
    if white_border:
        img[:3], img[-3:], img[:, :3], img[:, -3:] = 255, 255, 255, 255
    return np.clip(img, 0, 255).astype(np.uint8)


def make_heads(root, n: int = 36, seed: int = 0, plant: str | None = None):
    """Three classes; `plant` gives class "ring" a cue: "border" (white frame), "size" (112 px
    images), "intensity" (a brighter head) or "text" (a burned-in white mark in a corner)."""
    rng = np.random.default_rng(seed)
    for label in CLASSES:
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            cue = plant if label == "ring" else None
            img = head_slice(label, rng, size=112 if cue == "size" else 96,
                             head_gain=1.35 if cue == "intensity" else 1.0, white_border=cue == "border")
            if cue == "text":
                img[4:10, 84:86], img[4:6, 84:90] = 255, 255  # an "L" in the top right corner
            Image.fromarray(img).save(root / label / f"{i:03d}.png")
    return root


def test_measure_reads_size_border_text_framing_and_intensity():
    rng = np.random.default_rng(1)
    plain = dict(zip(FEATURES, measure(head_slice("disc", rng))))
    framed = dict(zip(FEATURES, measure(head_slice("disc", rng, white_border=True))))
    bright = dict(zip(FEATURES, measure(head_slice("disc", rng, head_gain=1.35))))
    lettered = head_slice("disc", rng)
    lettered[4:10, 84:86], lettered[4:6, 84:90] = 255, 255
    text = dict(zip(FEATURES, measure(lettered)))
    assert plain["log2_width"] == pytest.approx(np.log2(96)) and plain["aspect"] == 1.0
    assert plain["colour"] == 0.0 and plain["chroma"] == 0.0
    assert plain["border_mean"] < 0.05 < 0.2 < framed["border_mean"]
    assert plain["text_components"] == 0 and text["text_components"] == 1
    assert text["text_area"] == pytest.approx(20 / 96 ** 2)
    assert 0.3 < plain["head_fraction"] < 0.55 and 0.4 < plain["head_cx"] < 0.6
    assert plain["skull_ring"] > 1.3  # the bright rim against the brain inside
    assert bright["p50"] > 1.25 * plain["p50"]
    hist = [plain[f"hist{k}"] for k in range(8)]
    assert sum(hist) == pytest.approx(1.0)


def test_measure_of_colour_and_blank_images():
    colour = np.zeros((40, 60, 3), np.uint8)
    colour[..., 0] = 200
    values = dict(zip(FEATURES, measure(colour)))
    assert values["colour"] == 1.0 and values["chroma"] == pytest.approx(200 / 255)
    assert values["aspect"] == 1.5
    blank = dict(zip(FEATURES, measure(np.zeros((50, 50), np.uint8))))
    assert blank["head_fraction"] == 0.0 and np.isnan(blank["p50"]) and np.isnan(blank["skull_ring"])


def _audit(root, tmp_path, **kw):
    return inspect_folder(root, workers=1, progress=False, cache_dir=tmp_path / "cache", **kw)


def test_clean_data_flags_nothing(tmp_path):
    report = _audit(make_heads(tmp_path / "clean"), tmp_path)["shortcuts"]
    assert report["flags"] == [] and report["n"] == 108
    lower = [e["ci"][0] for g in report["groups"].values() for e in g["per_class"].values()]
    assert max(lower) < 0.65
    assert report["groups"]["size"]["constant"] and report["groups"]["size"]["overall"]["auc"] == 0.5


@pytest.mark.parametrize("plant, group", [("border", "border"), ("size", "size"),
                                          ("intensity", "intensity"), ("text", "text")])
def test_planted_cue_is_flagged_for_its_class(tmp_path, plant, group):
    report = _audit(make_heads(tmp_path / plant, plant=plant), tmp_path)["shortcuts"]
    flags = {(f["group"], f["class"]): f for f in report["flags"]}
    flag = flags[(group, "ring")]
    assert flag["ci"][0] >= 0.75 and flag["auc"] >= 0.95
    assert flag["sentence"].startswith(f"ring can be told apart by {report['groups'][group]['title']} alone: AUC")
    assert {g for g, _ in flags} <= {group, "all", "intensity", "framing", "border"}
    assert all(e["key"].startswith("ring/") for e in flag["typical"])
    assert not any(e["key"].startswith("ring/") for e in flag["least_like"])
    assert "ring" not in {c for g, c in flags if g == "all"}  # "all" only for unexplained classes


def test_inspect_cli_prints_the_audit_and_writes_the_sheet(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDISCAN_CACHE", str(tmp_path / "cache"))
    root, out = make_heads(tmp_path / "data", plant="border"), tmp_path / "out"
    result = CliRunner().invoke(app, ["inspect", str(root), "--out", str(out), "--json", "--no-progress",
                                      "--workers", "1"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    sentence = next(f["sentence"] for f in report["shortcuts"]["flags"] if f["group"] == "border")
    assert sentence in result.output and "shortcut audit" in result.output
    assert report["sheets"]["shortcuts"] == str(out / "shortcuts.png")
    assert Image.open(out / "shortcuts.png").height > 2 * 128
    saved = json.loads((out / "inspect.json").read_text())
    assert saved["shortcuts"]["flags"] == report["shortcuts"]["flags"]
    skipped = CliRunner().invoke(app, ["inspect", str(root), "--json", "--no-progress", "--no-shortcuts"])
    assert "shortcuts" not in json.loads(skipped.stdout)
