"""The out-of-distribution flag: fitted at training, stored in the bundle, shown wherever predictions appear."""

import csv
import io
import json
import shutil

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

from mediscan.cli import app
from mediscan.data.prepare import load_run_data
from mediscan.evaluation.runner import evaluate_run
from mediscan.forward import batched_outputs
from mediscan.ood import (CONFIDENCE, OOD_FILE, TARGET_RATE, FeatureDensity, OodDetector, OodStatisticsError,
                          bounded_threshold, exceedances_allowed, fit_detector, head_layer_name, load_detector)
from mediscan.training import trainer
from mediscan.predict import Classifier
from mediscan.serve.app import create_app
from mediscan.training.trainer import train
from shapes_data import make_shapes, shape_image

TINY = dict(model="resnet18", input_size=40, epochs=5, batch_size=16, lr=3e-3, augment="demo",
            crop_foreground=False, group_duplicates=False)


def foreign_images(n: int = 8, seed: int = 0) -> dict[str, list[np.ndarray]]:
    """Uniform RGB noise, and blank fields brighter than the shapes' dark (~40) background."""
    rng = np.random.default_rng(seed)
    return {"noise": [rng.integers(0, 256, (48, 48, 3), dtype=np.uint8) for _ in range(n)],
            "blank": [np.full((48, 48), v, dtype=np.uint8) for v in np.linspace(96, 255, n).astype(int)]}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    data = make_shapes(tmp_path_factory.mktemp("shapes") / "data", n_per_class=40)
    run = train(data, recipe="default", out=tmp_path_factory.mktemp("runs") / "shapes", device="cpu",
                progress=False, workers=1, cache_dir=tmp_path_factory.mktemp("cache"), evaluate=False,
                **TINY)
    evaluate_run(run, device="cpu", progress=False, n_resamples=20)
    return run


@pytest.fixture(scope="module")
def classifier(run_dir):
    return Classifier.load(run_dir, device="cpu")


@pytest.fixture()
def old_run(run_dir, tmp_path):
    """The run as a bundle written before OOD statistics existed."""
    old = tmp_path / "old"
    shutil.copytree(run_dir, old)
    meta = json.loads((old / "model.json").read_text())
    del meta["ood"]
    (old / "model.json").write_text(json.dumps(meta))
    (old / OOD_FILE).unlink()
    return old


def split_images(classifier, run_dir, name):
    prepared = load_run_data(run_dir, classifier.meta, progress=False)
    return np.asarray(prepared.decoded.images[np.sort(prepared.indices[name])])


def test_density_ranks_far_points_higher_and_survives_a_save(tmp_path):
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 1, (3, 32))
    labels = rng.integers(0, 3, 600)
    features = centres[labels] + rng.normal(0, 0.05, (600, 32))
    density = FeatureDensity.fit(features, labels, rank=8)
    near = density.score(centres[[0, 1, 2]] + rng.normal(0, 0.05, (3, 32)))
    far = density.score(rng.normal(0, 1, (3, 32)))
    assert near.max() < far.min()
    OodDetector(density, 1.0, "fc").save(tmp_path)  # sklearn hands back F-ordered components
    loaded = load_detector(tmp_path, {"ood": {"threshold": 1.0, "layer": "fc"}})
    np.testing.assert_allclose(loaded.score(features[:50]), density.score(features[:50]), rtol=1e-5)


def test_threshold_bounds_the_validation_exceedances(run_dir, classifier):
    block = classifier.meta["ood"]
    val = split_images(classifier, run_dir, "val")
    scores = np.sort(classifier.ood_scores(classifier.outputs_batch(val)))
    k = exceedances_allowed(len(val))
    assert (run_dir / OOD_FILE).is_file() and block["quantile"] == pytest.approx(1 - k / len(val))
    assert block["threshold"] == pytest.approx(float(scores[len(val) - k - 1]), rel=1e-5)
    assert block["calibration_images"] == len(val)


def test_threshold_reuses_the_validation_features_it_is_given(run_dir, classifier):
    prepared = load_run_data(run_dir, classifier.meta, progress=False)
    model = classifier.model
    fresh = fit_detector(model, prepared, device="cpu")
    val = prepared.decoded.images[np.sort(prepared.indices["val"])]
    features = batched_outputs(model, val, mean=prepared.mean, std=prepared.std,
                               feature_layer=model.get_submodule(head_layer_name(model))).features
    assert fit_detector(model, prepared, device="cpu", val_features=features).threshold == pytest.approx(
        fresh.threshold, rel=1e-6)
    assert fit_detector(model, prepared, device="cpu", val_features=-features).threshold != pytest.approx(
        fresh.threshold, rel=1e-3)  # the given features are the ones scored


def test_training_hands_its_last_validation_features_to_the_threshold(tmp_path, monkeypatch):
    given = []

    def recording_fit(model, prepared, **options):
        given.append((len(prepared.indices["val"]), options.get("val_features")))
        return fit_detector(model, prepared, **options)

    monkeypatch.setattr(trainer, "fit_detector", recording_fit)
    data = make_shapes(tmp_path / "data", n_per_class=20)
    train(data, recipe="default", out=tmp_path / "run", device="cpu", progress=False, workers=1,
          cache_dir=tmp_path / "cache", evaluate=False, tta=False, **{**TINY, "epochs": 1})
    (n_val, features), = given
    assert features is not None and features.shape[0] == n_val


@pytest.mark.parametrize("n", [10, 59, 60, 100, 571, 2000])
def test_exceedances_allowed_is_the_largest_k_whose_upper_bound_meets_the_target(n):
    from scipy.stats import beta

    def upper(k: int) -> float:
        return beta.ppf(CONFIDENCE, k + 1, n - k)

    k = exceedances_allowed(n)
    assert upper(k + 1) > TARGET_RATE
    assert k == 0 or upper(k) <= TARGET_RATE
    assert {59: 0, 100: 1, 571: 19}.get(n, k) == k


def test_bounded_threshold_leaves_k_validation_scores_above_it():
    scores = np.random.default_rng(0).normal(size=571)
    threshold, quantile = bounded_threshold(scores)
    assert int((scores > threshold).sum()) == 19 and quantile == pytest.approx(1 - 19 / 571)


def test_noise_and_blank_are_flagged_and_own_test_images_mostly_not(run_dir, classifier):
    for kind, images in foreign_images().items():
        predictions = classifier.predict(images)
        assert all(p.outside for p in predictions), (kind, [p.ood_score for p in predictions])
    test = split_images(classifier, run_dir, "test")
    outside = classifier.ood.outside(classifier.ood_scores(classifier.outputs_batch(test)))
    assert outside.mean() <= 0.25
    shapes = [shape_image(kind, np.random.default_rng(5)) for kind in ("circle", "cross", "square")]
    assert sum(p.outside for p in classifier.predict(shapes)) <= 1


def test_evaluate_writes_the_flag_and_its_count(run_dir):
    with open(run_dir / "predictions.csv") as handle:
        rows = list(csv.DictReader(handle))
    block = json.loads((run_dir / "metrics.json").read_text())["test"]["ood"]
    assert block["n"] == len(rows) and block["n_outside"] == sum(r["outside"] == "1" for r in rows)
    threshold = json.loads((run_dir / "model.json").read_text())["ood"]["threshold"]
    assert all((float(r["ood_score"]) > threshold) == (r["outside"] == "1") for r in rows)
    html = (run_dir / "report.html").read_text()
    assert f"Out-of-distribution check: {block['n_outside']} of {block['n']} test images" in html


def test_cli_predict_shows_the_flag(run_dir, tmp_path):
    Image.fromarray(foreign_images()["noise"][0]).save(tmp_path / "noise.png")
    Image.fromarray(shape_image("circle", np.random.default_rng(3))).save(tmp_path / "circle.png")
    runner = CliRunner()
    result = runner.invoke(app, ["predict", str(run_dir), str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    by_name = {p["source"].rsplit("/", 1)[-1]: p for p in json.loads(result.stdout)["predictions"]}
    assert by_name["noise.png"]["outside"] is True and by_name["noise.png"]["ood_score"] > 0
    table = runner.invoke(app, ["predict", str(run_dir), str(tmp_path / "noise.png")])
    assert "outside what this model knows" in table.output
    rows = list(csv.DictReader(io.StringIO(
        runner.invoke(app, ["predict", str(run_dir), str(tmp_path), "--csv"]).stdout)))
    assert {r["file"].rsplit("/", 1)[-1]: r["outside"] for r in rows}["noise.png"] == "1"


def test_api_returns_the_flag_and_the_model_card_names_the_check(classifier, run_dir):
    buffer = io.BytesIO()
    Image.fromarray(foreign_images()["noise"][0]).save(buffer, format="PNG")
    with TestClient(create_app(classifier, run_dir=run_dir)) as client:
        body = client.post("/api/predict", files={"file": ("n.png", buffer.getvalue())}).json()
        model = client.get("/api/model").json()
    assert body["outside"] is True and body["ood_score"] > model["ood"]["threshold"]
    assert body["uncertain"] in (True, False)  # a separate verdict from "outside"


def test_older_bundles_load_and_predict_without_the_flag(old_run):
    old = Classifier.load(old_run, device="cpu")
    [prediction] = old.predict(foreign_images()["noise"][0])
    assert old.ood is None and prediction.outside is None and prediction.ood_score is None
    rows = list(csv.DictReader(io.StringIO(CliRunner().invoke(
        app, ["predict", str(old_run), str(old_run / "plots"), "--csv"]).stdout)))
    assert rows and {(r["ood_score"], r["outside"]) for r in rows} == {("", "")}


def test_damaged_statistics_are_named(run_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(run_dir, broken)
    (broken / OOD_FILE).write_bytes(b"not safetensors")
    with pytest.raises(OodStatisticsError, match=str(broken / OOD_FILE)):
        Classifier.load(broken, device="cpu")


def test_onnx_backend_scores_like_torch(run_dir, classifier, tmp_path):
    pytest.importorskip("onnxruntime")
    from mediscan.export import export_onnx

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    export_onnx(copy)
    onnx = Classifier.load(copy, backend="onnx")
    images = foreign_images()["noise"][:4] + [shape_image("cross", np.random.default_rng(2))]
    torch_scores = [p.ood_score for p in classifier.predict(images)]
    onnx_predictions = onnx.predict(images)
    np.testing.assert_allclose([p.ood_score for p in onnx_predictions], torch_scores, rtol=1e-3)
    assert [p.outside for p in onnx_predictions] == [p.outside for p in classifier.predict(images)]
