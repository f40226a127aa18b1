"""mediscan.data.mirror: flips are taken away only where a mirror image changes the class."""

import numpy as np

import modality_data
from mediscan.data.characterise import sample_indices
from mediscan.data.folders import scan_folder
from mediscan.data.mirror import image_pairs, mirrored_classes, named_pairs, thumbnail
from mediscan.data.phantom import make_phantom


def _thumbs(root):
    folder = scan_folder(root)
    picked = sample_indices(folder, limit=300)
    return np.stack([thumbnail(folder.read(int(i))) for i in picked]), folder.labels[picked], folder.classes


def test_names_that_differ_by_side_are_paired():
    classes = ["femur-left", "femur-right", "Kidney_Left", "kidney_right", "liver", "left-only"]
    assert named_pairs(classes) == [("femur-left", "femur-right"), ("Kidney_Left", "kidney_right")]
    assert named_pairs(["glioma", "meningioma", "notumor", "pituitary"]) == []


def test_a_class_and_its_mirror_image_are_found_from_the_pixels(tmp_path):
    thumbs, labels, classes = _thumbs(modality_data.organ_sides_npz(tmp_path / "organamnist.npz"))
    assert image_pairs(thumbs, labels, classes) == [("0", "1")]


def test_symmetric_or_differently_textured_classes_keep_their_flips(tmp_path):
    for root in (make_phantom(tmp_path / "phantom", n=12, size=96, seed=0),
                 modality_data.tiny_grey_npz(tmp_path / "pneumoniamnist.npz", n=60),
                 modality_data.microscopy(tmp_path / "cells", n=24)):
        assert mirrored_classes(*_thumbs(root)) == []


def test_thumbnails_ignore_exposure():
    image = 2 * np.random.default_rng(0).integers(0, 100, (40, 50), dtype=np.uint8)
    np.testing.assert_allclose(thumbnail(image), thumbnail(image // 2 + 30), atol=0.1)
