"""Atomic writes: a write killed midway leaves the old file intact and no temporary file behind."""

import os

import pytest
import torch

from mediscan import files
from mediscan.bundle import load_checkpoint, save_bundle, save_checkpoint
from mediscan.files import atomic_path, write_atomic, write_json
from mediscan.models import create_model
from mediscan.run_folder import RunFolder
from test_export import make_run


def _kill_at_rename(monkeypatch):
    def killed(src, dst):
        raise KeyboardInterrupt("killed while renaming")

    monkeypatch.setattr(files.os, "replace", killed)


def test_write_replaces_content_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "metrics.json"
    write_json(path, {"accuracy": 0.5})
    write_json(path, {"accuracy": 0.9})
    assert path.read_text() == '{\n  "accuracy": 0.9\n}'
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
    assert oct(path.stat().st_mode & 0o777) == oct(0o666 & ~_umask())  # like a plain open()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_writer_failing_midway_keeps_the_old_file(tmp_path):
    path = tmp_path / "history.csv"
    write_atomic(path, "epoch\n1\n")
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            tmp.write_text("epoch\n1\n2")
            raise RuntimeError("disk full")
    assert path.read_text() == "epoch\n1\n" and [p.name for p in tmp_path.iterdir()] == ["history.csv"]


def test_killed_bundle_write_keeps_the_old_weights_and_model_json(tmp_path, monkeypatch):
    run = make_run(tmp_path / "run")
    before = {name: (run / name).read_bytes() for name in ("model.safetensors", "model.json")}
    _kill_at_rename(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        save_bundle(run, create_model("seed_cnn", 3), {"model": "seed_cnn", "classes": ["a", "b", "c"]})
    with pytest.raises(KeyboardInterrupt):
        RunFolder(run).write_meta({"model": "broken"})
    assert {name: (run / name).read_bytes() for name in before} == before
    assert sorted(p.name for p in run.iterdir() if p.is_file()) == ["model.json", "model.safetensors"]


def test_killed_checkpoint_write_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    model = create_model("seed_cnn", 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    save_checkpoint(tmp_path, model, optimizer, {"epoch": 1})
    _kill_at_rename(monkeypatch)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(1.0)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, model, optimizer, {"epoch": 2})
    monkeypatch.undo()
    fresh = create_model("seed_cnn", 2)
    state, _ = load_checkpoint(tmp_path, fresh, torch.optim.SGD(fresh.parameters(), lr=0.1))
    assert state["epoch"] == 1 and [p.name for p in tmp_path.iterdir()] == ["last.safetensors"]
    moved = next(iter(model.state_dict()))
    assert torch.equal(fresh.state_dict()[moved] + 1.0, model.state_dict()[moved])
