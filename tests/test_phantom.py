"""The demo phantom: deterministic, balanced, masses where masses.json says, no brightness shortcut."""

import json

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from mediscan.data.phantom import PHANTOM_CLASSES, make_phantom, render
from mediscan.transforms import find_foreground

TUMOURS = ("glioma", "meningioma", "pituitary")


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    return make_phantom(tmp_path_factory.mktemp("phantom"), n=400, size=96, seed=3)


@pytest.fixture(scope="module")
def images(phantom):
    """(image as float, class index, mass) for every file of the phantom."""
    masses = json.loads((phantom / "masses.json").read_text())
    return [(np.asarray(Image.open(phantom / rel), dtype=np.float64), PHANTOM_CLASSES.index(rel.split("/")[0]),
             mass) for rel, mass in sorted(masses.items())]


def _chance_check(features: np.ndarray, labels: np.ndarray) -> float:
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    return float(cross_val_score(model, features, labels, cv=5).mean())


def test_deterministic(tmp_path):
    a = make_phantom(tmp_path / "a", n=8, size=64, seed=1)
    b = make_phantom(tmp_path / "b", n=8, size=64, seed=1)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) == 9  # 8 images + masses.json
    for path in files:
        assert (a / path).read_bytes() == (b / path).read_bytes()
    c = make_phantom(tmp_path / "c", n=8, size=64, seed=2)
    assert (a / files[0]).read_bytes() != (c / files[0]).read_bytes()


def test_balanced_greyscale_pngs(phantom):
    counts = {c: len(list((phantom / c).glob("*.png"))) for c in PHANTOM_CLASSES}
    assert counts == {c: 100 for c in PHANTOM_CLASSES}
    with Image.open(next((phantom / "glioma").glob("*.png"))) as img:
        assert img.mode == "L" and img.size == (96, 96)


def test_masses_json_lists_every_file_with_masses_inside_the_head(phantom, images):
    masses = json.loads((phantom / "masses.json").read_text())
    assert sorted(masses) == sorted(str(p.relative_to(phantom)) for p in phantom.rglob("*.png"))
    for image, label, mass in images:
        if PHANTOM_CLASSES[label] == "notumor":
            assert mass is None
            continue
        x0, y0, x1, y1 = mass["box"]
        assert 0 <= x0 < mass["x"] < x1 <= image.shape[1] and 0 <= y0 < mass["y"] < y1 <= image.shape[0]
        assert mass["rx"] == (x1 - x0) / 2 and mass["radius"] >= 1.5
        lx0, ly0, lx1, ly1 = mass["lesion_box"]
        assert lx0 <= x0 and ly0 <= y0 and x1 <= lx1 and y1 <= ly1
        head = find_foreground(image.astype(np.uint8))
        assert head.mask[int(mass["y"]) // head.step, int(mass["x"]) // head.step]


@pytest.mark.parametrize("style", ["default", "shifted"])
@pytest.mark.parametrize("label", TUMOURS)
def test_the_mass_is_all_that_differs_from_the_same_slice_without_it(label, style):
    for seed in range(12):
        image, mass = render(label, np.random.default_rng(seed), size=96, style=style)
        healthy, none = render("notumor", np.random.default_rng(seed), size=96, style=style)
        assert none is None
        diff = np.abs(image.astype(np.int16) - healthy)
        x0, y0, x1, y1 = mass["lesion_box"]
        outside = diff.copy()
        outside[y0:y1, x0:x1] = 0
        assert outside.max() == 0  # nothing changed outside the lesion
        x0, y0, x1, y1 = mass["box"]
        assert diff[y0:y1, x0:x1].mean() > 4  # grey levels: visible above the noise, not glaring


def test_masses_stand_out_from_their_surroundings(images):
    contrasts = []
    for image, _, mass in images:
        if mass is None:
            continue
        yy, xx = np.mgrid[: image.shape[0], : image.shape[1]] + 0.5
        d = np.hypot((xx - mass["x"]) / mass["rx"], (yy - mass["y"]) / mass["ry"])
        inside, ring = image[d < 0.6], image[(d > 1.3) & (d < 2.2)]
        contrasts.append(abs(inside.mean() - ring.mean()) / image.std())
    assert np.median(contrasts) > 0.3


def test_global_brightness_cannot_tell_the_classes_apart(images):
    features = np.array([[image.mean(), image.std()] for image, _, _ in images])
    labels = np.array([label for _, label, _ in images])
    assert _chance_check(features, labels) < 0.35  # chance is 0.25


def test_the_strongest_local_contrast_cannot_tell_the_classes_apart(images):
    """Vessels and a normal gland in every class: "the brightest blob" is not a mass detector."""
    features = []
    for image, _, _ in images:
        dog = ndimage.gaussian_filter(image, 1.5) - ndimage.gaussian_filter(image, 5)
        features.append([dog.max(), dog.min(), *np.percentile(dog, [0.1, 99.9])])
    labels = np.array([label for _, label, _ in images])
    assert _chance_check(np.array(features), labels) < 0.4


def test_shifted_style_changes_contrast_and_framing():
    default = [render(PHANTOM_CLASSES[k % 4], np.random.default_rng(k), size=96) for k in range(24)]
    shifted = [render(PHANTOM_CLASSES[k % 4], np.random.default_rng(k), size=96, style="shifted")
               for k in range(24)]
    assert all(image.shape == (96, 96) for image, _ in default)
    aspects = [image.shape[1] / image.shape[0] for image, _ in shifted]
    assert min(aspects) < 0.9 and max(aspects) > 1.1 and min(min(i.shape) for i, _ in shifted) == 96

    def head_fraction(image: np.ndarray) -> float:
        top, bottom, left, right = find_foreground(image).box(image.shape)
        return (bottom - top) * (right - left) / image.size

    default_fill = [head_fraction(image) for image, _ in default]
    shifted_fill = [head_fraction(image) for image, _ in shifted]
    assert min(default_fill) > 0.45 and min(shifted_fill) < 0.35  # wide black margins
    assert max(shifted_fill) > 0.65  # and tight framings
    letters = [(image[:12, :12] > 180).any() or (image[:12, -12:] > 180).any() or
               (image[-16:, :12] > 180).any() or (image[-16:, -12:] > 180).any() for image, _ in shifted]
    assert np.mean(letters) > 0.9  # a burned-in letter in a corner


def test_shifted_contrast_is_t2_like():
    """CSF (the ventricles at the centre of the head) is dark in the default style, bright when shifted."""
    def skew(image: np.ndarray) -> float:
        top, bottom, left, right = find_foreground(image).box(image.shape)
        h, w = bottom - top, right - left
        centre = image[top + 3 * h // 10: bottom - 3 * h // 10, left + 3 * w // 10: right - 3 * w // 10]
        low, median, high = np.percentile(centre, [5, 50, 95])
        return (high - median) - (median - low)

    for seed in range(8):
        assert skew(render("notumor", np.random.default_rng(seed), size=96)[0]) < 0
        assert skew(render("notumor", np.random.default_rng(seed), size=96, style="shifted")[0]) > 0


def test_make_phantom_shifted_writes_the_same_layout(tmp_path):
    root = make_phantom(tmp_path, n=8, size=64, style="shifted")
    masses = json.loads((root / "masses.json").read_text())
    assert len(masses) == 8 and all((masses[k] is None) == k.startswith("notumor") for k in masses)
    shapes = {Image.open(root / k).size for k in masses}
    assert any(w != h for w, h in shapes)


def test_unknown_style_and_label_are_refused():
    with pytest.raises(ValueError, match="shifted"):
        render("glioma", np.random.default_rng(0), style="sepia")
    with pytest.raises(ValueError, match="meningioma"):
        render("astrocytoma", np.random.default_rng(0))
