"""One predictor and one data preparation: evaluate, the robustness suite and the ONNX backend agree
with `Classifier.predict_files`; evaluate follows what the run recorded."""

import csv
import json
import shutil

import pytest
from typer.testing import CliRunner

from mediscan.cli import app
from mediscan.evaluation.robustness import run_robustness
from mediscan.evaluation.runner import evaluate_run
from mediscan.export import export_onnx
from mediscan.predict import Classifier
from mediscan.run_folder import RunFolder
from mediscan.training.trainer import train
from shapes_data import CLASSES, make_shapes

TINY_WITH_TTA = dict(model="resnet18", input_size=32, epochs=1, batch_size=16, augment="demo",
                     crop_foreground=False, group_duplicates=False, tta=True)


@pytest.fixture(scope="module")
def tta_run(tmp_path_factory):
    """A run trained with test-time augmentation (and so evaluated with it), exported to ONNX."""
    data = make_shapes(tmp_path_factory.mktemp("shapes") / "data", n_per_class=15)
    run = train(data, recipe="default", out=tmp_path_factory.mktemp("runs") / "tta", device="cpu",
                progress=False, workers=1, cache_dir=tmp_path_factory.mktemp("cache"), **TINY_WITH_TTA)
    export_onnx(run)
    return run, data


def predictions_csv(run) -> list[dict]:
    with open(run / "predictions.csv") as handle:
        return list(csv.DictReader(handle))


def test_the_run_uses_tta_and_has_a_test_split(tta_run):
    run, _ = tta_run
    assert json.loads((run / "model.json").read_text())["tta"] is True
    assert len(predictions_csv(run)) >= 3


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_evaluate_predictions_equal_predict_files(tta_run, backend):
    run, data = tta_run
    rows = predictions_csv(run)
    got = Classifier.load(run, device="cpu", backend=backend).predict_files([data / r["file"] for r in rows])
    assert not got.failures and len(got.predictions) == len(rows)
    for row, prediction in zip(rows, got.predictions):
        assert prediction.source == str(data / row["file"])
        assert prediction.label == row["predicted"]
        for name in CLASSES:
            assert abs(prediction.probabilities[name] - float(row[name])) <= 1e-4
        assert prediction.ood_score == pytest.approx(float(row["ood_score"]), rel=1e-3)


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_robustness_clean_accuracy_equals_metrics_accuracy(tta_run, backend):
    run, _ = tta_run
    result = run_robustness(run, corruptions=["blur"], severities=[1], device="cpu", progress=False,
                            workers=1, backend=backend)
    metrics = json.loads((run / "metrics.json").read_text())
    assert result["clean_accuracy"] == pytest.approx(metrics["test"]["accuracy"], abs=1e-12)


def test_robustness_command_takes_the_onnx_backend(tta_run):
    run, _ = tta_run
    result = CliRunner().invoke(app, ["robustness", str(run), "--corruptions", "blur", "--severities", "1",
                                      "--backend", "onnx", "--no-progress", "--json", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((run / "metrics.json").read_text())
    assert json.loads(result.stdout)["clean_accuracy"] == pytest.approx(metrics["test"]["accuracy"], abs=1e-12)


def test_evaluate_uses_the_recorded_preprocessing_not_the_recipe(tta_run, tmp_path):
    run, _ = tta_run
    copy = shutil.copytree(run, tmp_path / "copy")
    meta = RunFolder(copy).read_meta()
    meta["recipe"].update(input_size=64, normalization="dataset")  # what a re-derivation would follow
    RunFolder(copy).write_meta(meta)
    evaluate_run(copy, device="cpu", progress=False, workers=1, n_resamples=10)
    assert predictions_csv(copy) == predictions_csv(run)


def test_evaluate_without_split_json_says_what_to_do(tta_run, tmp_path):
    run, _ = tta_run
    copy = shutil.copytree(run, tmp_path / "copy")
    (copy / "split.json").unlink()
    before = (copy / "metrics.json").read_bytes()
    result = CliRunner().invoke(app, ["evaluate", str(copy), "--no-progress"])
    assert result.exit_code == 2
    message = " ".join(result.output.split())  # the console wraps long lines
    assert "split.json: missing" in message and "mediscan evaluate RUN DATA" in message
    assert (copy / "metrics.json").read_bytes() == before
