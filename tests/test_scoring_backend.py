"""A large test split is scored through ONNX Runtime on a CPU: same figures, a shorter finish."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from mediscan.cli import app
from mediscan.evaluation.runner import evaluate_run
from mediscan.forward import batched_logits
from mediscan.models import create_model
from mediscan.training import scoring_backend as backend_module
from mediscan.predict import Classifier
from mediscan.training.scoring_backend import (ONNX_MIN_TEST_IMAGES, SHIP_GRAPH_AFTER_SECONDS, onnx_logits_of,
                                               scoring_backend, ships_graph)
from mediscan.training.time_plan import TimePlan
from mediscan.training.trainer import train
from shapes_data import make_shapes


def test_onnx_only_for_large_test_splits_on_a_cpu():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert scoring_backend(cpu, ONNX_MIN_TEST_IMAGES) == "onnx"
    assert scoring_backend(cpu, ONNX_MIN_TEST_IMAGES - 1) == "torch"  # the export would not pay
    assert scoring_backend(cuda, 50_000) == "torch"


def test_the_graph_ships_with_a_large_test_split_or_a_minute_of_training_on_a_cpu():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert ships_graph(cpu, ONNX_MIN_TEST_IMAGES, train_seconds=5.0)  # the test split is scored through it
    assert ships_graph(cpu, 100, train_seconds=SHIP_GRAPH_AFTER_SECONDS)  # cheap beside the run
    assert not ships_graph(cpu, 100, train_seconds=SHIP_GRAPH_AFTER_SECONDS - 1)
    assert not ships_graph(cuda, 50_000, train_seconds=3600.0)


def test_probe_session_gives_the_networks_logits():
    torch.manual_seed(0)
    model = create_model("resnet18", 3, pretrained=False).eval()
    images = np.random.default_rng(0).integers(0, 256, (5, 3, 40, 40), dtype=np.uint8)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    onnx = onnx_logits_of(model, mean=mean, std=std, channels=3, size=40)(images)
    np.testing.assert_allclose(onnx, batched_logits(model, images, mean=mean, std=std), atol=1e-4)


def test_faster_test_backend_shortens_only_the_test_splits_share():
    def finish(speedup: float) -> float:
        plan = TimePlan(budget=600.0, n_val=5000, n_test=40_000, n_ood_fit=2000, started=0.0,
                        test_speedup=speedup)
        plan.observe(images=100, seconds=0.25)  # 2.5 ms an image
        return plan.finish_seconds()

    assert finish(1.0) - finish(2.0) == pytest.approx(40_000 / 2 * 0.0025)


@pytest.mark.slow
def test_training_scores_a_large_test_split_through_its_exported_graph(tmp_path, monkeypatch):
    monkeypatch.setattr(backend_module, "ONNX_MIN_TEST_IMAGES", 10)  # this small split counts as large
    data = make_shapes(tmp_path / "data", n_per_class=40)
    run = train(data, recipe="cpu", out=tmp_path / "run", device="cpu", progress=False, workers=1,
                cache_dir=tmp_path / "cache", time_budget=60, epochs=2, model="resnet18", pretrained=False,
                freeze_early=False, input_size=48, crop_foreground=False)
    assert (run / "model.onnx").is_file()
    written = json.loads((run / "metrics.json").read_text())
    assert written["backend"] == "onnx"
    onnx_metrics = written["test"]
    torch_metrics = evaluate_run(run, progress=False, workers=1)["test"]
    assert onnx_metrics["n"] == torch_metrics["n"] >= 10
    assert onnx_metrics["accuracy"] == torch_metrics["accuracy"]
    assert onnx_metrics["macro_auc"] == pytest.approx(torch_metrics["macro_auc"], abs=1e-3)
    cli = CliRunner().invoke(app, ["evaluate", str(run), "--backend", "onnx", "--json", "--no-progress"])
    assert cli.exit_code == 0, cli.output
    assert json.loads(cli.stdout)["test"]["accuracy"] == torch_metrics["accuracy"]
    assert Classifier.load(run, backend="auto").backend == "onnx"  # predict's default on a CPU
    refused = CliRunner().invoke(app, ["evaluate", str(run), str(data), "--adapt", "--backend", "onnx"])
    assert refused.exit_code == 2 and "--backend torch" in refused.output
