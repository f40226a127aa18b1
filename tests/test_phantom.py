"""The demo phantom: deterministic, balanced, masses where masses.json says, no brightness shortcut."""

import json

import numpy as np
import pytest
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score

from mediscan.data.phantom import PHANTOM_CLASSES, make_phantom, render


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    return make_phantom(tmp_path_factory.mktemp("phantom"), n=400, size=96, seed=3)


def _load(root, relative):
    return np.asarray(Image.open(root / relative), dtype=np.float64)


def test_deterministic(tmp_path):
    a = make_phantom(tmp_path / "a", n=8, size=64, seed=1)
    b = make_phantom(tmp_path / "b", n=8, size=64, seed=1)
    for path in sorted(a.rglob("*.png")):
        assert path.read_bytes() == (b / path.relative_to(a)).read_bytes()


def test_balanced_classes(phantom):
    counts = {c: len(list((phantom / c).glob("*.png"))) for c in PHANTOM_CLASSES}
    assert counts == {c: 100 for c in PHANTOM_CLASSES}


def test_masses_are_inside_the_head_and_visible(phantom):
    masses = json.loads((phantom / "masses.json").read_text())
    contrasts = []
    for relative, mass in masses.items():
        if relative.startswith("notumor"):
            assert mass is None
            continue
        image = _load(phantom, relative)
        x, y, r = mass["x"], mass["y"], mass["radius"]
        assert 0 <= x < image.shape[1] and 0 <= y < image.shape[0]
        yy, xx = np.mgrid[: image.shape[0], : image.shape[1]]
        inside = (xx - x) ** 2 + (yy - y) ** 2 <= (0.6 * r) ** 2
        ring = ((xx - x) ** 2 + (yy - y) ** 2 > (1.3 * r) ** 2) & \
               ((xx - x) ** 2 + (yy - y) ** 2 <= (2.2 * r) ** 2)
        contrasts.append(abs(image[inside].mean() - image[ring].mean()) / (image.std() + 1e-9))
    assert np.median(contrasts) > 0.3


def test_global_brightness_cannot_tell_the_classes_apart(phantom):
    features, labels = [], []
    for k, name in enumerate(PHANTOM_CLASSES):
        for path in sorted((phantom / name).glob("*.png")):
            image = np.asarray(Image.open(path), dtype=np.float64)
            features.append([image.mean(), image.std()])
            labels.append(k)
    score = cross_val_score(LogisticRegression(max_iter=2000), np.array(features), labels, cv=5)
    assert score.mean() < 0.35  # chance is 0.25


def test_shifted_style_changes_framing_and_contrast():
    rng = np.random.default_rng(0)
    shapes = {render("glioma", rng, size=96, style="shifted")[0].shape for _ in range(6)}
    assert any(h != w for h, w in shapes)
    default, _ = render("notumor", np.random.default_rng(1), size=96)
    shifted, _ = render("notumor", np.random.default_rng(1), size=96, style="shifted")
    assert (default > 20).mean() > (shifted > 20).mean()  # wider black margins


def test_unknown_style():
    with pytest.raises(ValueError, match="shifted"):
        render("glioma", np.random.default_rng(0), style="sepia")
