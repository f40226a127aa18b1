"""End to end on a small generated data set: train, run folder, predict, evaluate, resume, bad files."""

import csv
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from sklearn.metrics import accuracy_score
from typer.testing import CliRunner

from mediscan.cli import app
from mediscan.predict import Classifier
from mediscan.training.trainer import train
from shapes_data import CLASSES, make_shapes, shape_image

FAST = dict(model="resnet18", input_size=40, epochs=12, batch_size=16, lr=3e-3, augment="demo",
            crop_foreground=False, group_duplicates=False)


def add_bad_files(root):
    """The bad inputs a real folder has; all but the 16-bit PNG and CMYK JPEG must be skipped."""
    rng = np.random.default_rng(1)
    good = Image.fromarray(shape_image("circle", rng))
    good.convert("RGB").save(root / "circle" / "whole.jpg")
    data = (root / "circle" / "whole.jpg").read_bytes()
    (root / "circle" / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (root / "circle" / "notes.jpg").write_text("this is not an image")
    (root / "circle" / "empty.png").write_bytes(b"")
    (root / "circle" / "readme.txt").write_text("labels by Dr X")
    sixteen = (shape_image("square", rng).astype(np.uint16) * 257)
    Image.fromarray(sixteen).save(root / "square" / "sixteen.png")
    Image.fromarray(shape_image("cross", rng)).convert("CMYK").save(root / "cross" / "cmyk.jpg")
    (root / ".ipynb_checkpoints").mkdir()
    Image.fromarray(shape_image("cross", rng)).save(root / ".ipynb_checkpoints" / "x.png")
    (root / "circle" / ".DS_Store").write_bytes(b"\0\1")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = make_shapes(tmp_path_factory.mktemp("shapes") / "data")
    add_bad_files(root)
    return root


@pytest.fixture(scope="module")
def run_dir(data_dir, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    return train(data_dir, recipe="default", out=tmp_path_factory.mktemp("runs") / "shapes",
                 device="cpu", progress=False, workers=1, cache_dir=cache, **FAST)


def test_run_folder_is_complete_and_pickle_free(run_dir):
    names = {p.name for p in run_dir.iterdir()}
    for required in ("model.safetensors", "model.json", "split.json", "history.csv",
                     "metrics.json", "report.html", "plots", "predictions.csv"):
        assert required in names
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert path.suffix in {".safetensors", ".json", ".csv", ".png", ".html"}, path
            assert not path.read_bytes().startswith(b"\x80"), f"{path} looks like a pickle"


def test_trained_model_beats_chance_by_far(run_dir):
    metrics = json.loads((run_dir / "metrics.json").read_text())["test"]
    assert metrics["accuracy"] >= 0.8  # chance is 1/3
    lo, hi = metrics["headline"]["accuracy"]["ci"]
    assert lo <= metrics["accuracy"] <= hi


def test_metrics_agree_with_predictions_csv_and_sklearn(run_dir):
    with open(run_dir / "predictions.csv") as handle:
        rows = list(csv.DictReader(handle))
    accuracy = accuracy_score([r["true"] for r in rows], [r["predicted"] for r in rows])
    metrics = json.loads((run_dir / "metrics.json").read_text())["test"]
    assert metrics["accuracy"] == pytest.approx(accuracy, abs=1e-9)
    assert metrics["n"] == len(rows)


def test_bad_files_are_listed_and_never_trained_on(run_dir):
    meta = json.loads((run_dir / "model.json").read_text())
    reported = {json.dumps(item) for item in meta["data"]["skipped"] + meta["data"]["unreadable"]}
    text = "\n".join(reported)
    for name in ("truncated.jpg", "notes.jpg", "empty.png", "readme.txt", ".ipynb_checkpoints",
                 ".DS_Store"):
        assert name in text, f"{name} not reported"
    split = json.loads((run_dir / "split.json").read_text())
    used = " ".join(split["train"] + split["val"] + split["test"])
    assert "sixteen.png" in used and "cmyk.jpg" in used
    for name in ("truncated.jpg", "notes.jpg", "empty.png", "readme.txt", "x.png"):
        assert name not in used


def test_split_is_stratified_and_recorded(run_dir):
    split = json.loads((run_dir / "split.json").read_text())
    sizes = {k: len(split[k]) for k in ("train", "val", "test")}
    total = sum(sizes.values())
    assert abs(sizes["train"] / total - 0.8) < 0.05
    for part in ("val", "test"):
        classes = {key.split("/")[0] for key in split[part]}
        assert classes == set(CLASSES)


def test_history_and_model_json(run_dir):
    with open(run_dir / "history.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == FAST["epochs"]
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    meta = json.loads((run_dir / "model.json").read_text())
    assert meta["classes"] == list(CLASSES) and meta["model"] == "resnet18"
    assert meta["preprocess"]["size"] == 40 and meta["temperature"] > 0
    assert meta["recipe"]["name"] == "default" and "torch" in meta["versions"]


def test_portable_run_folder_predicts_and_evaluates(run_dir, data_dir, tmp_path):
    copy = tmp_path / "elsewhere"
    shutil.copytree(run_dir, copy)
    classifier = Classifier.load(copy, device="cpu")
    files = sorted((data_dir / "square").glob("0*.png"))[:10]
    predictions = classifier.predict(files)
    assert sum(p.label == "square" for p in predictions) >= 8
    assert abs(sum(predictions[0].probabilities.values()) - 1) < 1e-6
    result = CliRunner().invoke(app, ["evaluate", str(copy), "--no-progress", "--json",
                                      "--resamples", "200"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["test"]["accuracy"] >= 0.8


def test_predict_cli_reports_bad_files_and_continues(run_dir, data_dir):
    good = sorted((data_dir / "cross").glob("0*.png"))[:3]
    bad = data_dir / "circle" / "truncated.jpg"
    result = CliRunner().invoke(app, ["predict", str(run_dir), *map(str, good), str(bad), "--json"])
    assert result.exit_code == 1, result.output  # some inputs skipped; the rest still predicted
    payload = json.loads(result.stdout)
    assert len(payload["predictions"]) == 3
    assert payload["failures"][0]["path"].endswith("truncated.jpg")
    csv_result = CliRunner().invoke(app, ["predict", str(run_dir), str(good[0]), "--csv"])
    header = csv_result.stdout.splitlines()[0]
    assert header == "file,label,probability,uncertain,ood_score,outside,circle,cross,square"


def test_predict_accepts_arrays_of_any_mode(run_dir):
    classifier = Classifier.load(run_dir, device="cpu")
    grey = shape_image("square", np.random.default_rng(5), size=90)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    a, b = classifier.predict([grey, rgb])
    assert a.label == b.label
    assert a.probability == pytest.approx(b.probability, abs=1e-6)


def test_resume_continues_where_it_stopped(data_dir, tmp_path):
    out = tmp_path / "resumable"
    options = dict(device="cpu", progress=False, workers=1, cache_dir=tmp_path / "c",
                   evaluate=False, **{**FAST, "epochs": 2})
    train(data_dir, recipe="default", out=out, **options)
    with safe_open(str(out / "last.safetensors"), framework="pt") as checkpoint:
        assert json.loads(checkpoint.metadata()["state"])["epoch"] == 2
    train(data_dir, out=out, resume=True, **{**options, "epochs": 3})
    with open(out / "history.csv") as handle:
        assert [int(r["epoch"]) for r in csv.DictReader(handle)] == [1, 2, 3]


def test_same_seed_same_split_and_losses(data_dir, tmp_path):
    options = dict(device="cpu", progress=False, workers=1, cache_dir=tmp_path / "c",
                   evaluate=False, **{**FAST, "epochs": 1})
    a = train(data_dir, recipe="default", out=tmp_path / "a", **options)
    b = train(data_dir, recipe="default", out=tmp_path / "b", **options)
    assert (a / "split.json").read_text() == (b / "split.json").read_text()
    loss = [next(csv.DictReader(open(run / "history.csv")))["train_loss"] for run in (a, b)]
    assert float(loss[0]) == pytest.approx(float(loss[1]), rel=1e-4)


def test_source_balanced_sampling_trains_and_is_recorded(data_dir, tmp_path, capsys):
    options = dict(device="cpu", progress=True, workers=1, cache_dir=tmp_path / "c",
                   evaluate=False, **{**FAST, "epochs": 1})
    run = train(data_dir, recipe="default", out=tmp_path / "sources", balance="sources", **options)
    assert json.loads((run / "recipe.json").read_text())["balance"] == "sources"
    assert "sampling balanced over classes and 8 intensity groups" in " ".join(capsys.readouterr().err.split())
    assert len(list(csv.DictReader(open(run / "history.csv")))) == 1


def test_mirror_channel_is_recorded_and_used_by_the_classifier(data_dir, tmp_path):
    options = dict(device="cpu", progress=False, workers=1, cache_dir=tmp_path / "c", evaluate=False,
                   **{**FAST, "epochs": 1})
    run = train(data_dir, recipe="default", out=tmp_path / "mirror", mirror_channel=True, **options)
    assert json.loads((run / "model.json").read_text())["preprocess"]["mirror_channel"] is True
    classifier = Classifier.load(run, backend="torch")
    image = shape_image("circle", np.random.default_rng(3))
    x = classifier.preprocess(image)
    assert np.array_equal(x[2], x[0][:, ::-1])
    [prediction] = classifier.predict(image)
    assert sum(prediction.probabilities.values()) == pytest.approx(1.0, abs=1e-5)


def _external_yes_no(root):
    """A tumour/no-tumour style folder from 'another source': mixed sizes and image modes."""
    rng = np.random.default_rng(7)
    modes = ["L", "RGB", "RGBA", "P", "I;16"]
    for k in range(24):
        kind = ("circle", "cross", "square")[k % 3]
        label = "no" if kind == "square" else "yes"
        size = int(rng.integers(40, 120))
        image = Image.fromarray(shape_image(kind, rng, size=size))
        mode = modes[k % len(modes)]
        if mode == "I;16":
            image = Image.fromarray(np.asarray(image).astype(np.uint16) * 257)
        else:
            image = image.convert(mode)
        (root / label).mkdir(parents=True, exist_ok=True)
        image.save(root / label / f"ext{k:02d}.png")
    return root


def test_external_validation_with_mapped_labels(run_dir, tmp_path):
    external = _external_yes_no(tmp_path / "hospital_b")
    result = CliRunner().invoke(app, [
        "evaluate", str(run_dir), str(external), "--map", "circle,cross=yes", "--map", "square=no",
        "--json", "--no-progress", "--resamples", "300"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)["metrics"]
    assert metrics["classes"] == ["no", "yes"] and metrics["n"] == 24
    assert metrics["binary"]["positive"] == "yes"
    for name in ("sensitivity", "specificity"):
        lo, hi = metrics["headline"][name]["ci"]
        assert lo <= metrics["headline"][name]["value"] <= hi
    with open(run_dir / "evaluations" / "hospital_b_predictions.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert metrics["accuracy"] == pytest.approx(
        accuracy_score([r["true"] for r in rows], [r["predicted"] for r in rows]), abs=1e-9)
    assert metrics["accuracy"] >= 0.7
    assert "hospital_b" in (run_dir / "report.html").read_text()


def test_unmapped_external_classes_get_an_actionable_error(run_dir, tmp_path):
    external = _external_yes_no(tmp_path / "other")
    result = CliRunner().invoke(app, ["evaluate", str(run_dir), str(external), "--no-progress"])
    assert result.exit_code == 2
    assert "--map" in result.output


def test_robustness_command_is_seeded_and_degrades(run_dir):
    args = ["robustness", str(run_dir), "--corruptions", "gaussian_noise,blur",
            "--severities", "1,5", "--json", "--no-progress"]
    first = json.loads(CliRunner().invoke(app, args).stdout)
    second = json.loads(CliRunner().invoke(app, args).stdout)
    assert first["corruptions"] == second["corruptions"]
    noise = first["corruptions"]["gaussian_noise"]["accuracy"]
    assert noise[-1] <= first["clean_accuracy"]
    assert 0 < first["score"] <= 1.5
    assert (run_dir / "robustness.json").exists() and (run_dir / "plots" / "robustness.png").exists()


def test_compare_trains_on_one_split_and_tabulates(data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDISCAN_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "compare"
    args = ["compare", str(data_dir), "--models", "resnet18,mobilenet_v3_small", "--out", str(out),
            "--recipe", "default", "--epochs", "2", "--input-size", "32", "--no-robustness", "--no-progress",
            "--json", "--device", "cpu"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    table = json.loads(result.stdout)
    assert [row["name"] for row in table["rows"]] == ["resnet18", "mobilenet_v3_small"]
    assert (out / "resnet18" / "split.json").read_text() == (out / "mobilenet_v3_small" / "split.json").read_text()
    assert table["mcnemar"][0]["p_value"] is not None
    assert json.loads((out / "resnet18" / "model.json").read_text())["input_size"] == 32
    assert (out / "report.html").exists() and (out / "plots" / "comparison.png").exists()
    again = json.loads(CliRunner().invoke(app, args).stdout)  # resumes: nothing retrained
    assert again["rows"][0]["train_seconds"] == table["rows"][0]["train_seconds"]


def test_compare_on_a_cpu_uses_the_cpu_recipe_and_reports_a_model_it_cannot_train(data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDISCAN_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "compare"
    args = ["compare", str(data_dir), "--models", "seed_cnn,no_such_model", "--out", str(out),
            "--epochs", "1", "--input-size", "32", "--no-robustness", "--no-progress", "--json", "--device", "cpu"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output  # one model could not be compared; the other was
    table = json.loads(result.stdout)
    assert table["recipe"] == "cpu"
    (row,) = table["rows"]
    assert row["name"] == "seed_cnn" and "from scratch" in row["note"]  # the cpu recipe is pretrained
    assert "130-px" in row["note"]  # its Dense layers fix its input size
    recipe = json.loads((out / "seed_cnn" / "recipe.json").read_text())
    assert recipe["pretrained"] is False and recipe["freeze_early"] is False
    assert json.loads((out / "seed_cnn" / "model.json").read_text())["input_size"] == 130
    (failed,) = table["failed"]
    assert failed["name"] == "no_such_model" and "no_such_model" in failed["error"]
    assert json.loads((out / "comparison.json").read_text())["failed"] == table["failed"]


def test_compare_says_what_it_will_cost_before_it_starts():
    from mediscan.evaluation.compare import plan_line
    from mediscan.training.recipes import get_recipe

    cpu = torch.device("cpu")
    line = plan_line(["a", "b", "c"], get_recipe("cpu"), cpu)
    assert "3 models" in line and "10-minute budget" in line and "about 30 minutes" in line
    unbounded = plan_line(["a"], get_recipe("default"), cpu)
    assert "40 epochs" in unbounded and "hours on a CPU" in unbounded
    assert "hours" not in plan_line(["a"], get_recipe("default"), torch.device("cuda"))


def test_a_tutorial_cnn_at_another_input_size_is_refused_before_decoding(data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDISCAN_CACHE", str(tmp_path / "cache"))
    result = CliRunner().invoke(app, ["train", str(data_dir), "--model", "seed_cnn", "--input-size", "64",
                                      "--out", str(tmp_path / "run"), "--no-progress"])
    assert result.exit_code == 2
    assert "built for 130-px inputs" in result.output and "--input-size 130" in result.output
    assert not any((tmp_path / "cache").glob("**/*.npy"))  # refused before any image was decoded
