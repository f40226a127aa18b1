"""Grad-CAM / Grad-CAM++: maps for registry models, localisation on a trained model, overlays."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from test_export import make_run
from typer.testing import CliRunner

from mediscan.cli import app
from mediscan.explain import explain, find_target_layers, overlay, save_overlays
from mediscan.models import create_model, model_config
from mediscan.predict import Classifier
from mediscan.transforms import Preprocess, normalize

SQUARE_SIZE = 130  # seed_cnn's input size


def classifier_for(model: str, size: int, classes=("a", "b", "c")) -> Classifier:
    """An untrained network wrapped as a Classifier (no run folder needed)."""
    torch.manual_seed(0)
    cfg = model_config(model)
    meta = {"model": model, "classes": list(classes), "preprocess": Preprocess(size=size).to_dict(),
            "mean": list(cfg.mean), "std": list(cfg.std), "temperature": 1.0}
    return Classifier(create_model(model, len(classes)).eval(), meta, device="cpu")


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
@pytest.mark.parametrize("model,size", [("seed_cnn", 130), ("resnet18", 64),
                                        ("efficientnet_lite0", 64), ("mobilenet_v3_small", 64)])
def test_cam_shape_and_range(model, size, method):
    classifier = classifier_for(model, size)
    image = np.random.default_rng(0).integers(0, 256, (80, 96), dtype=np.uint8)
    cam, prediction = explain(classifier, image, method=method)
    assert cam.shape == (size, size) and cam.dtype == np.float32
    assert np.isfinite(cam).all() and cam.min() >= 0 and cam.max() <= 1
    assert prediction.label in classifier.classes
    assert all(not p.grad_fn and p.grad is None for p in classifier.model.parameters())


def test_target_layer_override_and_fallback():
    classifier = classifier_for("resnet18", 64)
    model = classifier.model
    assert find_target_layers(model, "resnet18") == [model.layer4]
    assert find_target_layers(model, "resnet18", "layer3") == [model.layer3]
    last_conv = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    assert find_target_layers(model) == [last_conv]
    image = np.full((64, 64), 100, dtype=np.uint8)
    cam, _ = explain(classifier, image, layer="layer3", target="c")
    assert cam.shape == (64, 64)
    with pytest.raises(ValueError, match="no layer 'nope'"):
        explain(classifier, image, layer="nope")
    with pytest.raises(ValueError, match="unknown class"):
        explain(classifier, image, target="zebra")
    with pytest.raises(ValueError, match="unknown CAM method"):
        explain(classifier, image, method="lime")


def test_onnx_classifier_cannot_explain():
    meta = {"model": "seed_cnn", "classes": ["a", "b"], "preprocess": Preprocess(size=130).to_dict(),
            "mean": [0, 0, 0], "std": [1, 1, 1]}
    onnx_like = Classifier(None, meta)  # no torch network: the ONNX backend
    with pytest.raises(ValueError, match="backend='torch'"):
        explain(onnx_like, np.zeros((130, 130), dtype=np.uint8))
    with pytest.raises(ValueError, match="backend='torch'"):
        save_overlays(onnx_like, [], "unused")  # refused before any file is touched


def square_image(rng, present: bool):
    """Noise, plus (when present) a bright square; returns the image and the square's box."""
    img = rng.normal(60, 15, (SQUARE_SIZE, SQUARE_SIZE))
    if not present:
        return np.clip(img, 0, 255).astype(np.uint8), None
    r = int(rng.integers(SQUARE_SIZE // 10, SQUARE_SIZE // 7))
    cy, cx = rng.integers(r + 1, SQUARE_SIZE - r - 1, 2)
    img[cy - r:cy + r + 1, cx - r:cx + r + 1] = rng.normal(200, 15, (2 * r + 1, 2 * r + 1))
    return np.clip(img, 0, 255).astype(np.uint8), (cy - r, cy + r + 1, cx - r, cx + r + 1)


@pytest.fixture(scope="module")
def square_classifier():
    """seed_cnn trained for a few seconds to tell 'square' from 'empty'."""
    rng = np.random.default_rng(0)
    classifier = classifier_for("seed_cnn", SQUARE_SIZE, classes=("empty", "square"))
    images = np.stack([classifier.preprocess(square_image(rng, i % 2 == 1)[0]) for i in range(192)])
    labels = torch.arange(192) % 2
    model, mean, std = classifier.model, classifier.meta["mean"], classifier.meta["std"]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(3):
        for batch in torch.randperm(192).split(32):
            loss = F.cross_entropy(model(normalize(torch.as_tensor(images[batch]), mean, std)),
                                   labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    return classifier


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_cam_peak_falls_inside_the_square(square_classifier, method):
    rng = np.random.default_rng(1)
    hits, correct, n = 0, 0, 16
    for _ in range(n):
        image, (top, bottom, left, right) = square_image(rng, present=True)
        cam, prediction = explain(square_classifier, image, method=method, target="square")
        row, col = np.unravel_index(cam.argmax(), cam.shape)
        hits += top <= row < bottom and left <= col < right
        correct += prediction.label == "square"
    print(f"{method}: CAM peak inside the square for {hits}/{n}; {correct}/{n} classified")
    assert correct >= 0.8 * n
    assert hits >= 0.75 * n


@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 32, 32), (32, 32), (32, 32, 3)])
def test_overlay_shape_and_dtype(shape):
    image = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    cam = np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32)
    out = overlay(image, cam)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    grey = image if image.ndim == 2 else image.reshape(-1, 32, 32)[0] if shape[0] in (1, 3) \
        else image[..., 0]
    assert np.array_equal(overlay(image, cam, alpha=0.0)[..., 0], grey)
    with pytest.raises(ValueError, match="differ in size"):
        overlay(image, np.zeros((16, 16), dtype=np.float32))


def test_save_overlays_writes_pngs_and_reports_bad_files(tmp_path, capsys):
    classifier = classifier_for("seed_cnn", 130)
    rng = np.random.default_rng(0)
    paths = []
    for folder in ("a", "b"):  # two files with the same name in different folders
        (tmp_path / folder).mkdir()
        paths.append(tmp_path / folder / "scan.png")
        Image.fromarray(rng.integers(0, 256, (70, 90), dtype=np.uint8)).save(paths[-1])
    broken = tmp_path / "broken.png"
    broken.write_bytes(paths[0].read_bytes()[:40])
    written = save_overlays(classifier, [paths[0], broken, paths[1]], tmp_path / "cams",
                            method="gradcam++")
    assert [p.name for p in written] == ["scan_cam.png", "scan_2_cam.png"]
    for path in written:
        with Image.open(path) as png:
            assert png.size == (130, 130) and png.mode == "RGB"
    assert "broken.png" in capsys.readouterr().err


def test_cli_explain_writes_overlay(tmp_path):
    run = make_run(tmp_path / "run")
    image = tmp_path / "scan.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (60, 60), dtype=np.uint8)).save(image)
    out = tmp_path / "cam.png"
    result = CliRunner().invoke(app, ["explain", str(run), str(image), "--method", "gradcam++",
                                      "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["overlay"] == str(out) and out.is_file() and payload["method"] == "gradcam++"
    missing = CliRunner().invoke(app, ["explain", str(run), str(tmp_path / "none.png")])
    assert missing.exit_code == 2
