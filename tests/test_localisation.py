"""The pointing game: boxes mapped onto the model's view, CAM peaks scored, layer chosen by resolution."""

import json

import numpy as np
import pytest
from PIL import Image
from test_explain import SQUARE_SIZE, classifier_for, square_classifier, square_image  # noqa: F401

from mediscan.evaluation.localisation import load_boxes, pointing_game
from mediscan.explain import default_cam_layer, find_target_layers, peak_inside, view_box
from mediscan.transforms import Preprocess


def test_view_box_follows_pad_and_stretch():
    image = np.zeros((100, 200), dtype=np.uint8)  # wide: padded top and bottom when fitted
    box = (50, 20, 100, 60)
    padded = view_box(Preprocess(size=100, fit="pad"), image, box)
    assert padded == pytest.approx((25, 10 + 25, 50, 30 + 25))
    stretched = view_box(Preprocess(size=100, fit="stretch"), image, box)
    assert stretched == pytest.approx((25, 20, 50, 60))


def test_view_box_follows_the_head_crop():
    image = np.zeros((120, 120), dtype=np.uint8)
    image[20:100, 40:120] = 150  # the "head" fills an 80 x 80 square
    preprocess = Preprocess(size=80, fit="pad", crop_foreground=True)
    x0, y0, x1, y1 = view_box(preprocess, image, (60, 40, 80, 60))
    view = preprocess(image)[0]
    assert view.shape == (80, 80)
    assert x1 - x0 == pytest.approx(y1 - y0, abs=0.5) and 15 <= x1 - x0 <= 21  # the margin shrinks it
    cols, rows = np.nonzero(view.max(0))[0], np.nonzero(view.max(1))[0]
    head_x0, head_y0 = view_box(preprocess, image, (40, 20, 120, 100))[:2]  # the head's corner
    assert head_x0 == pytest.approx(cols[0], abs=1) and head_y0 == pytest.approx(rows[0], abs=1)


def test_peak_inside_uses_pixel_centres():
    cam = np.zeros((10, 10), dtype=np.float32)
    cam[4, 7] = 1.0  # pixel centre (7.5, 4.5)
    assert peak_inside(cam, (7, 4, 8, 5))
    assert not peak_inside(cam, (0, 0, 7.4, 10))


@pytest.mark.parametrize("size,layer", [(96, "layer2"), (128, "layer2"), (224, "layer3"), (384, "layer4")])
def test_default_cam_layer_keeps_at_least_12_cells_per_side(size, layer):
    model = classifier_for("resnet18", size).model
    assert default_cam_layer(model, "resnet18", (3, size, size)) == layer
    assert default_cam_layer(model, "resnet18") == "layer4"  # no input size: the registry's
    assert find_target_layers(model, "resnet18", None, (3, size, size)) == [model.get_submodule(layer)]
    assert find_target_layers(model, "resnet18", "layer2, layer4") == [model.layer2, model.layer4]


def test_pointing_game_scores_a_model_that_finds_squares(tmp_path, square_classifier):  # noqa: F811
    rng = np.random.default_rng(5)
    (tmp_path / "square").mkdir()
    masses = {}
    for k in range(12):
        image, (top, bottom, left, right) = square_image(rng, present=True)
        Image.fromarray(image).save(tmp_path / "square" / f"{k}.png")
        masses[f"square/{k}.png"] = {"box": [int(left), int(top), int(right), int(bottom)]}
    masses["empty/0.png"] = None
    (tmp_path / "masses.json").write_text(json.dumps(masses))
    boxes = load_boxes(tmp_path / "masses.json", [*masses, "not/in/masses.png"])
    assert len(boxes) == 12
    result = pointing_game(square_classifier, tmp_path, boxes, progress=False, layer="features.4")
    assert result.images == 12 and result.per_class == {"square": [result.hits, 12]}
    assert result.hits >= 9
    low, high = result.ci
    assert low < result.rate <= high <= 1
    decoy = {key: (0, 0, 4, 4) for key in boxes}  # a corner the squares never cover
    assert pointing_game(square_classifier, tmp_path, decoy, progress=False).hits == 0
    assert SQUARE_SIZE == square_classifier.preprocess.size
