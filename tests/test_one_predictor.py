"""One predictor: evaluate, the robustness suite and the ONNX backend agree with `Classifier.predict_files`."""

import csv
import json

import pytest

from mediscan.evaluation.robustness_suite import run_robustness
from mediscan.export import export_onnx
from mediscan.predict import Classifier
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
