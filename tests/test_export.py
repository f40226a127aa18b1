"""ONNX export: parity with PyTorch at several batch sizes, metadata, the onnx Classifier backend."""

import json

import numpy as np
import onnx
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from mediscan.bundle import save_bundle
from mediscan.cli import app
from mediscan.evaluation.calibration import apply_temperature as softmax
from mediscan.export import export_onnx
from mediscan.models import create_model, model_config
from mediscan.onnx_backend import ExportError, OnnxBackend
from mediscan.predict import Classifier, current_onnx
from mediscan.run_folder import RunFolder
from mediscan.transforms import Preprocess

CLASSES = ("glioma", "meningioma", "notumor")


def make_run(run_dir, *, model="seed_cnn", size=130, classes=CLASSES, tta=False, seed=0):
    """An untrained bundle with the model.json keys `train` writes (fast fixture for API tests)."""
    torch.manual_seed(seed)
    cfg = model_config(model)
    meta = {"name": run_dir.name, "model": model, "classes": list(classes),
            "preprocess": Preprocess(size=size).to_dict(), "mean": list(cfg.mean),
            "std": list(cfg.std), "input_size": size, "channels": 3, "temperature": 1.3,
            "tta": tta, "recipe": {"name": "test"}, "data": {"root": str(run_dir / "data")}}
    save_bundle(run_dir, create_model(model, len(classes)), meta)
    return run_dir


def add_test_split(run_dir, n=4, size=56):
    """A few image files under run_dir/data and a split.json listing them as the test set."""
    rng = np.random.default_rng(3)
    keys = []
    for i in range(n):
        path = run_dir / "data" / CLASSES[i % 3] / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)).save(path)
        keys.append(f"{CLASSES[i % 3]}/{i}.png")
    (run_dir / "split.json").write_text(json.dumps({"train": [], "val": [], "test": keys}))


def random_batch(n, size=130, seed=1):
    return np.random.default_rng(seed).integers(0, 256, (n, 3, size, size), dtype=np.uint8)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    run = make_run(tmp_path_factory.mktemp("runs") / "tiny")
    add_test_split(run)
    export_onnx(run)
    return run


@pytest.mark.parametrize("batch", [1, 5])
def test_onnx_probabilities_match_pytorch(exported, batch):
    torch_clf = Classifier.load(exported, device="cpu")
    images = random_batch(batch, seed=batch)
    expected = torch_clf.predict_batch(images)
    got = softmax(OnnxBackend(exported / "model.onnx").logits_batch(images), torch_clf.temperature)
    assert got.shape == (batch, len(CLASSES))
    assert np.abs(got - expected).max() <= 1e-4
    assert (got.argmax(1) == expected.argmax(1)).all()


def test_chunks_run_side_by_side_and_come_back_in_order(exported):
    backend = OnnxBackend(exported / "model.onnx")
    images = random_batch(7, seed=5)
    whole = backend.logits_batch(images, batch_size=7)
    np.testing.assert_allclose(backend.logits_batch(images, batch_size=2), whole, atol=1e-5)  # 4 chunks
    assert backend.session.get_session_options().intra_op_num_threads == 1


def test_metadata_documents_preprocessing_and_parity(exported):
    backend = OnnxBackend(exported / "model.onnx")
    meta = backend.metadata
    assert meta["classes"] == list(CLASSES)
    assert Preprocess.from_dict(meta["preprocess"]) == Preprocess(size=130)
    assert meta["mean"] == list(model_config("seed_cnn").mean) and meta["temperature"] == 1.3
    assert meta["model"] == "seed_cnn"
    assert meta["parity"]["images"] == 6 + 4  # random inputs + the test split's files
    assert meta["parity"]["max_abs_prob_diff"] <= 1e-4 and meta["parity"]["same_argmax"]
    graph_input = onnx.load(str(exported / "model.onnx")).graph.input[0]
    assert graph_input.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert graph_input.type.tensor_type.shape.dim[0].dim_param == "batch"


def test_onnx_classifier_agrees_with_torch_classifier(exported):
    images = [np.random.default_rng(i).integers(0, 256, (50 + i, 60), dtype=np.uint8)
              for i in range(4)]
    torch_preds = Classifier.load(exported, device="cpu").predict(images)
    onnx_preds = Classifier.load(exported, backend="onnx").predict(images)
    for a, b in zip(torch_preds, onnx_preds):
        assert a.label == b.label
        assert b.probability == pytest.approx(a.probability, abs=1e-4)


@pytest.mark.parametrize("model,size,tta", [("resnet18", 40, True),
                                            ("efficientnet_lite0", 48, False)])
def test_registry_models_round_trip(tmp_path, model, size, tta):
    run = make_run(tmp_path / model, model=model, size=size, tta=tta)
    export_onnx(run)
    images = random_batch(5, size=size)
    expected = Classifier.load(run, device="cpu").logits_batch(images)
    got = Classifier.load(run, backend="onnx").logits_batch(images)
    assert np.abs(softmax(got) - softmax(expected)).max() <= 1e-4


def test_failed_parity_raises_and_writes_nothing(tmp_path, monkeypatch):
    run = make_run(tmp_path / "run")
    monkeypatch.setattr("mediscan.export.PARITY_TOLERANCE", -1.0)
    with pytest.raises(ExportError, match="disagrees"):
        export_onnx(run)
    assert not (run / "model.onnx").exists()


def test_onnx_backend_without_export_says_what_to_do(tmp_path):
    run = make_run(tmp_path / "run")
    with pytest.raises(FileNotFoundError, match="mediscan export"):
        Classifier.load(run, backend="onnx")


def test_stale_onnx_is_refused(tmp_path):
    run = make_run(tmp_path / "run")
    export_onnx(run)
    make_run(run, seed=1)  # retrained in place: a new model.json "created"
    with pytest.raises(ExportError, match="export .* --onnx"):
        Classifier.load(run, backend="onnx")


def test_auto_backend_takes_a_current_graph_on_the_cpu_and_torch_otherwise(exported, tmp_path, monkeypatch):
    assert Classifier.load(exported, backend="auto").backend == "onnx"
    assert Classifier.load(exported, device="cpu").backend == "torch"  # the API's default stays torch
    run = make_run(tmp_path / "run")
    assert Classifier.load(run, backend="auto").backend == "torch"  # nothing exported
    export_onnx(run)
    make_run(run, seed=1)  # retrained in place: the graph is stale
    stale = Classifier.load(run, backend="auto")
    assert stale.backend == "torch" and len(stale.predict([np.zeros((50, 60), dtype=np.uint8)])) == 1
    monkeypatch.setattr("mediscan.predict.pick_device", lambda device=None: torch.device("cuda"))
    assert current_onnx(RunFolder(exported)) is None  # on a GPU the network runs in PyTorch
    with pytest.raises(ValueError, match="torch, onnx or auto"):
        Classifier.load(exported, backend="tensorrt")


def test_predict_command_runs_the_graph_by_default_and_torch_for_grad_cam(exported, tmp_path):
    image = exported / "data" / "glioma" / "0.png"
    runner = CliRunner()
    plain = runner.invoke(app, ["predict", str(exported), str(image), "--json", "--no-seen-check"])
    assert plain.exit_code == 0, plain.output
    with_cam = runner.invoke(app, ["predict", str(exported), str(image), "--json", "--no-seen-check",
                                   "--cam", str(tmp_path / "cam")])
    assert with_cam.exit_code == 0, with_cam.output
    by_graph, by_torch = json.loads(plain.output), json.loads(with_cam.output)
    assert by_graph["backend"] == "onnx" and by_torch["backend"] == "torch"
    (graph_pred,), (torch_pred,) = by_graph["predictions"], by_torch["predictions"]
    assert graph_pred["label"] == torch_pred["label"]
    assert graph_pred["probability"] == pytest.approx(torch_pred["probability"], abs=1e-4)
    assert list((tmp_path / "cam").glob("*.png"))


def test_onnx_backend_keeps_plain_text_metadata_other_tools_add(exported, tmp_path):
    model = onnx.load(str(exported / "model.onnx"))
    onnx.helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props},
                                        "onnx.quant.pre_process": "onnxruntime.quant"})
    backend = OnnxBackend(model.SerializeToString())
    assert backend.metadata["onnx.quant.pre_process"] == "onnxruntime.quant"
    assert backend.metadata["classes"] == list(CLASSES)  # mediscan's own values still parsed
    assert backend.logits_batch(random_batch(2)).shape == (2, len(CLASSES))


def test_cli_export(tmp_path):
    run = make_run(tmp_path / "run")
    result = CliRunner().invoke(app, ["export", str(run), "--onnx", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["onnx"] == str(run / "model.onnx") and payload["parity"]["same_argmax"]
    assert CliRunner().invoke(app, ["export", str(run)]).exit_code == 2
