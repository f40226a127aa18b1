"""torchrun with 2 CPU processes (gloo) trains as well as one process on the same data."""

import json
import os
import subprocess
import sys

import pytest

from shapes_data import make_shapes

ARGS = ["--recipe", "default", "--crop", "--model", "resnet18",
        "--input-size", "40", "--epochs", "8", "--batch-size", "16",
        "--lr", "3e-3", "--device", "cpu", "--no-progress", "--json", "--workers", "1"]


def _train(command: list[str], env: dict) -> dict:
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout[result.stdout.index("{"):])


@pytest.mark.slow
def test_two_process_ddp_matches_single_process_quality(tmp_path):
    data = make_shapes(tmp_path / "data")
    env = {**os.environ, "MEDISCAN_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    single = _train([sys.executable, "-m", "mediscan", "train", str(data), "--out",
                     str(tmp_path / "single"), *ARGS], env)
    ddp = _train([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                  "--master_port=29577", "-m", "mediscan", "train", str(data), "--out",
                  str(tmp_path / "ddp"), *ARGS], env)
    single_acc = single["test_accuracy"]["value"]
    ddp_acc = ddp["test_accuracy"]["value"]
    assert single_acc >= 0.8 and ddp_acc >= 0.8  # chance is 1/3
    assert abs(single_acc - ddp_acc) <= 0.2  # 18 test images: one image is 5.6 points
    assert (tmp_path / "ddp" / "split.json").read_text() == (tmp_path / "single" / "split.json").read_text()
    meta = json.loads((tmp_path / "ddp" / "model.json").read_text())
    assert meta["best_epoch"] >= 1
