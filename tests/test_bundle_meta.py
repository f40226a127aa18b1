"""Crafted run folders: every broken or out-of-bounds model.json / weights file is one BundleError that
names the file, what was wrong and what to do; the CLI turns it into a message and exit code 2."""

import json
import pickle

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from mediscan import bundle
from mediscan.bundle import BundleError, load_bundle
from mediscan.cli import app
from mediscan.files import MAX_JSON_BYTES
from mediscan.predict import Classifier
from mediscan.run_folder import RunFolder
from test_export import make_run


@pytest.fixture(scope="module")
def good_run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("runs") / "good", model="resnet18", size=40)


@pytest.fixture
def run(good_run, tmp_path):
    """A fresh copy of the good run to damage."""
    copy = tmp_path / "run"
    copy.mkdir()
    for name in ("model.json", "model.safetensors"):
        (copy / name).write_bytes((good_run / name).read_bytes())
    return copy


def _edit_meta(run, change) -> None:
    meta = json.loads((run / "model.json").read_text())
    change(meta)
    (run / "model.json").write_text(json.dumps(meta))


def _set(path: str, value):
    def change(meta):
        *parents, key = path.split(".")
        target = meta
        for parent in parents:
            target = target[parent]
        target[key] = value
    return change


CASES = [
    (_set("preprocess.size", 30000), "size must be an integer from 8 to 1024, got 30000"),
    (_set("preprocess.size", 4), "size must be an integer from 8 to 1024"),
    (_set("preprocess.size", "40"), "size must be an integer"),
    (_set("preprocess.channels", 2), "channels must be 1 or 3"),
    (_set("preprocess", "big"), "preprocess must be an object"),
    (_set("classes", [f"c{i}" for i in range(1_000_000)]),
     "classes must be a list of 2 to 1000 names, got 1000000"),
    (_set("classes", ["glioma", "glioma", "notumor"]), "class names repeat: ['glioma']"),
    (_set("classes", ["glioma", " ", "notumor"]), "class names must be non-empty strings"),
    (_set("classes", "abc"), "classes must be a list of 2 to 1000 names, got str"),
    (_set("temperature", -1.3), "temperature must be a number from 0.05 to 20"),
    (_set("temperature", 0), "temperature must be a number from 0.05 to 20"),
    (_set("temperature", float("nan")), "(what calibration fits), got nan"),
    (_set("temperature", "1.3"), "temperature must be a number"),
    (_set("std", [0.0, 0.0, 0.0]), "std values must be at least 1e-06"),
    (_set("std", [float("nan"), 1.0, 1.0]), "std must be a list of finite numbers"),
    (_set("mean", [0.5, 0.5]), "mean has 2 values for 3 channel(s)"),
    (_set("model", "no_such_net"), "unknown model 'no_such_net'"),
    (_set("input_size", 224), "input_size is 224 but preprocess says 40"),
    (_set("tta", "yes"), "tta must be true or false"),
    (lambda meta: meta.pop("classes"), "missing classes"),
]


@pytest.mark.parametrize("change, message", CASES)
def test_out_of_bounds_model_json_is_refused_naming_file_and_fix(run, change, message):
    _edit_meta(run, change)
    with pytest.raises(BundleError) as caught:
        load_bundle(run)
    text = str(caught.value)
    assert message in text
    assert str(run / "model.json") in text and "train again" in text


@pytest.mark.parametrize("content, message", [
    ('{"model": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply"),
    ('{"model": ' + "[" * 40 + "]" * 40 + "}", "nested more than 32 levels deep"),
    ("[1, 2]", "expected a JSON object, got list"),
    ("{'model': 1}", "not valid JSON"),
])
def test_unparseable_model_json_is_refused(run, content, message):
    (run / "model.json").write_text(content)
    with pytest.raises(BundleError, match="model.json") as caught:
        RunFolder(run).read_meta()
    assert message in str(caught.value)


def test_oversized_model_json_is_refused_before_parsing(run, monkeypatch):
    with open(run / "model.json", "ab") as handle:
        handle.write(b" " * MAX_JSON_BYTES)
    monkeypatch.setattr(json, "loads", lambda *a, **k: pytest.fail("parsed an oversized file"))
    with pytest.raises(BundleError, match="more than the 16,777,216 allowed"):
        RunFolder(run).read_meta()


@pytest.mark.parametrize("damage, message", [
    (lambda data: pickle.dumps({"fc.weight": np.zeros(3)}), "header too large"),
    (lambda data: data[: len(data) // 2], "incomplete metadata"),
    (lambda data: b"", "header too small"),
])
def test_non_safetensors_weights_are_refused(run, damage, message):
    weights = run / "model.safetensors"
    weights.write_bytes(damage(weights.read_bytes()))
    with pytest.raises(BundleError) as caught:
        Classifier.load(run, device="cpu")
    text = str(caught.value)
    assert f"{weights}: not a readable safetensors file" in text and message in text


def test_class_count_not_matching_the_weights_is_refused_before_building(run, monkeypatch):
    _edit_meta(run, _set("classes", [f"c{i}" for i in range(1000)]))
    devices = []
    real_create = bundle.create_model

    def recording_create(*args, **kwargs):
        devices.append(torch.get_default_device().type)
        return real_create(*args, **kwargs)

    monkeypatch.setattr(bundle, "create_model", recording_create)
    with pytest.raises(BundleError) as caught:
        load_bundle(run)
    assert devices == ["meta"]  # only the shape-only skeleton was built, no 1000-way head
    text = str(caught.value)
    assert "does not fit the resnet18 with 1000 classes" in text
    assert "fc.weight is [3, 512], needs [1000, 512]" in text and str(run / "model.safetensors") in text


def test_the_untouched_copy_still_loads(run):
    model, meta = load_bundle(run)
    assert meta["classes"] == ["glioma", "meningioma", "notumor"] and model.fc.out_features == 3


def test_cli_refuses_a_broken_bundle_with_exit_2_and_no_traceback(run, tmp_path):
    image = tmp_path / "x.npy"
    np.save(image, np.zeros((8, 8)))
    _edit_meta(run, _set("preprocess.size", 30000))
    commands = (["predict", str(run), str(image)], ["export", str(run), "--onnx"],
                ["explain", str(run), str(image)])
    for args in commands:
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert "Traceback" not in result.output and "size must be an integer from 8 to 1024" in result.output


def test_evaluate_never_overwrites_metrics_with_an_invalid_bundle(run):
    (run / "metrics.json").write_text('{"test": {"accuracy": 0.95}}')
    _edit_meta(run, _set("temperature", -1.0))
    result = CliRunner().invoke(app, ["evaluate", str(run), "--no-progress"])
    assert result.exit_code == 2 and "temperature must be a number from 0.05 to 20" in result.output
    assert (run / "metrics.json").read_text() == '{"test": {"accuracy": 0.95}}'
