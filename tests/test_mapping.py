"""--map parsing, probability merging and matching target names to a data folder's classes."""

import numpy as np
import pytest
from numpy.testing import assert_allclose

from mediscan.evaluation.mapping import (
    MappingError,
    apply_target_names,
    map_probabilities,
    parse_mapping,
    resolve_target_order,
)
from mediscan.evaluation.metrics import classification_metrics

BRAIN = ["glioma", "meningioma", "notumor", "pituitary"]
TUMOR_YES_NO = {"glioma": "yes", "meningioma": "yes", "notumor": "no", "pituitary": "yes"}


@pytest.mark.parametrize("specs, expected", [
    (["glioma,meningioma,pituitary=yes", "notumor=no"], TUMOR_YES_NO),
    ([" glioma , meningioma,pituitary = yes", "notumor=no"], TUMOR_YES_NO),
    (["Glioma,MENINGIOMA,Pituitary=yes", "no_tumor=no"], TUMOR_YES_NO),
    (["glioma,meningioma,pituitary=tumor", "notumor=no"],
     {"glioma": "tumor", "meningioma": "tumor", "notumor": "no", "pituitary": "tumor"}),
    ([], {c: c for c in BRAIN}),
])
def test_parse_mapping(specs, expected):
    assert parse_mapping(specs, BRAIN) == expected


def test_parse_mapping_file(tmp_path):
    f = tmp_path / "map.txt"
    f.write_text("# brain -> tumour yes/no\nglioma,meningioma,pituitary=yes\n\nnotumor=no  # x\n")
    assert parse_mapping([str(f)], BRAIN) == TUMOR_YES_NO


@pytest.mark.parametrize("specs, match", [
    (["glioma,meningioma=yes", "notumor=no"], "not mapped: pituitary"),
    (["glioma,meningioma,pituitary,astrocytoma=yes", "notumor=no"],
     "'astrocytoma' .* its classes are: glioma, meningioma, notumor, pituitary"),
    (["glioma,meningioma,pituitary=yes", "notumor=no", "glioma=no"], "mapped twice"),
    (["glioma,meningioma,pituitary"], "neither 'a,b=target' nor an existing file"),
    (["glioma=yes=no"], "exactly one '='"),
    (["=yes"], "needs source classes"),
])
def test_parse_mapping_errors_name_the_problem(specs, match):
    with pytest.raises(MappingError, match=match):
        parse_mapping(specs, BRAIN)


def test_map_probabilities_sums_merged_classes():
    probs = np.array([[0.1, 0.2, 0.3, 0.4], [0.7, 0.1, 0.1, 0.1]])
    out = map_probabilities(probs, BRAIN, TUMOR_YES_NO, ["no", "yes"])
    assert_allclose(out, [[0.3, 0.7], [0.1, 0.9]])
    assert_allclose(map_probabilities(probs, BRAIN, TUMOR_YES_NO), [[0.7, 0.3], [0.9, 0.1]])
    with pytest.raises(MappingError, match=r"targets \['no'\] are not among"):
        map_probabilities(probs, BRAIN, TUMOR_YES_NO, ["yes"])


@pytest.mark.parametrize("targets, data_classes, expected", [
    (["yes", "no"], ["no", "yes"], {"yes": "yes", "no": "no"}),
    (["tumor", "no"], ["no", "yes"], {"tumor": "yes", "no": "no"}),
    (["tumor", "notumor"], ["no", "yes"], {"tumor": "yes", "notumor": "no"}),
    (["yes", "no"], ["Healthy", "Tumour"], {"yes": "Tumour", "no": "Healthy"}),
    (["tumor", "no"], ["no_tumor", "tumor"], {"tumor": "tumor", "no": "no_tumor"}),
    (["Tumor", "No"], ["NO", "YES"], {"Tumor": "YES", "No": "NO"}),
    (["parasitized", "uninfected"], ["Parasitized", "Uninfected"],
     {"parasitized": "Parasitized", "uninfected": "Uninfected"}),
    # a target that no data class matches keeps its own name
    (BRAIN, ["glioma", "notumor"],
     {"glioma": "glioma", "meningioma": "meningioma", "notumor": "notumor",
      "pituitary": "pituitary"}),
])
def test_resolve_target_order(targets, data_classes, expected):
    mapping = {f"src{i}": t for i, t in enumerate(targets)}
    assert resolve_target_order(mapping, data_classes) == expected


@pytest.mark.parametrize("targets, data_classes, match", [
    (["tumor", "no"], ["maybe", "no"], "'maybe' matches no mapping target; targets are: tumor, no"),
    (["tumor", "no"], ["no", "normal"], "matches more than one data class"),
])
def test_resolve_target_order_errors(targets, data_classes, match):
    mapping = {f"src{i}": t for i, t in enumerate(targets)}
    with pytest.raises(MappingError, match=match):
        resolve_target_order(mapping, data_classes)


def test_four_class_model_on_yes_no_folder_end_to_end():
    mapping = parse_mapping(["glioma,meningioma,pituitary=tumor", "notumor=no"], BRAIN)
    data_classes = ["no", "yes"]  # as scanned from OTHER/{no,yes}
    mapping = apply_target_names(mapping, resolve_target_order(mapping, data_classes))
    assert mapping == {"glioma": "yes", "meningioma": "yes", "notumor": "no", "pituitary": "yes"}
    probs = np.array([[0.6, 0.1, 0.2, 0.1], [0.05, 0.05, 0.85, 0.05], [0.2, 0.2, 0.5, 0.1]])
    y = np.array([1, 0, 1])  # folder labels: yes, no, yes
    mapped = map_probabilities(probs, BRAIN, mapping, data_classes)
    m = classification_metrics(y, mapped, data_classes)
    assert m["binary"]["positive"] == "yes"
    assert_allclose(m["accuracy"], 2 / 3)
    assert_allclose(m["binary"]["sensitivity"], 1 / 2)
    assert_allclose(m["binary"]["specificity"], 1.0)
