"""`--resume` keeps the best epoch's weights, every run file is written atomically, a damaged checkpoint
is a message."""

import json

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from mediscan import files
from mediscan.cli import app
from mediscan.training import run_state, trainer
from mediscan.training.recipes import get_recipe
from mediscan.training.trainer import train
from shapes_data import make_shapes

TINY = dict(model="resnet18", input_size=32, batch_size=16, lr=3e-3, augment="demo",
            crop_foreground=False, group_duplicates=False, device="cpu", progress=False, workers=1)
VAL_ACC = {1: 0.9, 2: 0.6, 3: 0.5}  # the first epoch is the best; resuming makes nothing better


def scripted_run(tmp_path_factory, keep: str):
    """A run trained 2 epochs, then resumed for a 3rd, with scripted validation accuracy.

    Returns (run folder, the model weights after each epoch, the files renamed into place)."""
    data = make_shapes(tmp_path_factory.mktemp("shapes") / "data", n_per_class=12)
    run = tmp_path_factory.mktemp("runs") / "resumable"
    cache = tmp_path_factory.mktemp("cache")
    after_epoch, renamed = {}, []
    monkeypatch = pytest.MonkeyPatch()
    real_save, real_replace = run_state.save_checkpoint, files.os.replace

    def val_metrics(model, prepared, device, criterion, plan=None, class_bias=None):
        epoch = len(after_epoch) + 1
        return {"val_loss": 1.0 - VAL_ACC[epoch], "val_acc": VAL_ACC[epoch]}, None

    def recording_save(run_dir, model, optimizer, state, best=None, averaged=None):
        after_epoch[state["epoch"]] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        real_save(run_dir, model, optimizer, state, best=best, averaged=averaged)

    def recording_replace(src, dst):
        renamed.append(dst)
        real_replace(src, dst)

    monkeypatch.setattr(trainer, "validate", val_metrics)
    monkeypatch.setattr(run_state, "save_checkpoint", recording_save)
    monkeypatch.setattr(files.os, "replace", recording_replace)
    try:
        train(data, recipe="default", out=run, epochs=2, keep=keep, cache_dir=cache, evaluate=True, **TINY)
        train(data, out=run, resume=True, epochs=3, cache_dir=cache, evaluate=False, **TINY)
    finally:
        monkeypatch.undo()
    return run, after_epoch, renamed, data


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
    return scripted_run(tmp_path_factory, keep="best")


def test_resumed_run_keeps_the_best_epoch_not_the_last_checkpoint(resumed):
    run, after_epoch, _, _ = resumed
    assert sorted(after_epoch) == [1, 2, 3]
    saved = load_file(str(run / "model.safetensors"))
    assert all(torch.equal(saved[k], v) for k, v in after_epoch[1].items())
    assert not all(torch.equal(saved[k], v) for k, v in after_epoch[2].items())
    assert json.loads((run / "model.json").read_text())["best_epoch"] == 1


def test_by_default_the_last_epoch_ships_and_the_best_is_reported(tmp_path_factory):
    """The annealed weights of the last epoch ship (`keep="last"`), even when validation liked epoch 1."""
    run, after_epoch, _, _ = scripted_run(tmp_path_factory, keep="last")
    saved = load_file(str(run / "model.safetensors"))
    assert all(torch.equal(saved[k], v) for k, v in after_epoch[3].items())
    meta = json.loads((run / "model.json").read_text())
    assert meta["weights_epoch"] == 3 and meta["best_epoch"] == 1 and meta["recipe"]["keep"] == "last"


def test_early_stopping_ships_the_best_epoch_unless_told_otherwise():
    assert get_recipe("cpu").keep == "last" and get_recipe("tutorial-resnet18").keep == "best"
    assert get_recipe("cpu").with_overrides(patience=3).keep == "best"
    assert get_recipe("cpu").with_overrides(patience=3, keep="last").keep == "last"
    with pytest.raises(ValueError, match="keep 'first' is not one of last, best"):
        get_recipe("cpu").with_overrides(keep="first")


def test_every_file_the_run_writes_is_renamed_into_place(resumed):
    run, _, renamed, _ = resumed
    written = {p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file()}
    assert {"model.safetensors", "last.safetensors", "model.json", "split.json", "metrics.json",
            "history.csv", "predictions.csv", "recipe.json", "report.html",
            "plots/confusion.png"} <= written
    into_run = {p.relative_to(run).as_posix() for p in map(type(run), renamed) if p.is_relative_to(run)}
    assert written == into_run


def test_truncated_checkpoint_on_resume_is_a_message_naming_it(resumed, tmp_path, monkeypatch):
    run, _, _, data = resumed
    copy = tmp_path / "run"
    copy.mkdir()
    for path in run.glob("*.*"):
        (copy / path.name).write_bytes(path.read_bytes())
    checkpoint = copy / "last.safetensors"
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    monkeypatch.setenv("MEDISCAN_CACHE", str(tmp_path / "cache"))
    result = CliRunner().invoke(app, ["train", str(data), "--out", str(copy), "--resume", "--epochs", "4",
                                      "--device", "cpu", "--workers", "1", "--no-progress"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"{checkpoint}: cannot resume from this checkpoint" in result.output.replace("\n", "")
    assert "train again without --resume" in result.output.replace("\n", "")
