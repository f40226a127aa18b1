"""Bundles and checkpoints: safetensors + JSON only, exact round-trips, actionable errors."""

import json

import pytest
import torch
from helpers_bundles import minimal_meta
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from mediscan.bundle import (
    BundleError,
    load_bundle,
    load_checkpoint,
    save_bundle,
    save_checkpoint,
)
from mediscan.models import create_model


def test_bundle_round_trip_is_exact_and_pickle_free(tmp_path):
    model = create_model("mobilenet_v3_small", 3).eval()
    save_bundle(tmp_path, model, minimal_meta("mobilenet_v3_small", ["a", "b", "c"]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json", "model.safetensors"]
    assert b"\x80\x04" not in (tmp_path / "model.safetensors").read_bytes()[:16]
    loaded, meta = load_bundle(tmp_path)
    assert meta["classes"] == ["a", "b", "c"] and "torch" in meta["versions"]
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))


def test_missing_bundle_says_what_to_do(tmp_path):
    with pytest.raises(BundleError, match="mediscan train"):
        load_bundle(tmp_path)
    (tmp_path / "model.json").write_text(json.dumps(minimal_meta("seed_cnn", ["a", "b"], 130)))
    with pytest.raises(BundleError, match="model.safetensors is missing"):
        load_bundle(tmp_path)


def test_checkpoint_restores_model_and_optimizer(tmp_path):
    torch.manual_seed(0)
    model = create_model("seed_cnn", 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(2):
        optimizer.zero_grad()
        model(torch.randn(4, 3, 130, 130)).sum().backward()
        optimizer.step()
    save_checkpoint(tmp_path, model, optimizer, {"epoch": 2, "history": [{"epoch": 1}]})
    fresh = create_model("seed_cnn", 2)
    fresh_opt = torch.optim.AdamW(fresh.parameters(), lr=1e-3)
    state, best = load_checkpoint(tmp_path, fresh, fresh_opt)
    assert state["epoch"] == 2 and state["history"] == [{"epoch": 1}]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.safetensors"]  # one atomic file
    for name, value in model.state_dict().items():  # no separate best: the last epoch was the best
        torch.testing.assert_close(best[name], value)
    for a, b in zip(model.parameters(), fresh.parameters()):
        torch.testing.assert_close(a, b)
    original = optimizer.state_dict()["state"]
    restored = fresh_opt.state_dict()["state"]
    torch.testing.assert_close(original[0]["exp_avg"], restored[0]["exp_avg"])
    torch.testing.assert_close(torch.as_tensor(original[0]["step"]), torch.as_tensor(restored[0]["step"]))


def test_checkpoint_keeps_an_earlier_best_epoch(tmp_path):
    torch.manual_seed(0)
    model = create_model("seed_cnn", 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    best = {k: torch.full_like(v, 0.5) for k, v in model.state_dict().items()}
    save_checkpoint(tmp_path, model, optimizer, {"epoch": 3}, best=best)
    fresh = create_model("seed_cnn", 2)
    state, restored = load_checkpoint(tmp_path, fresh, torch.optim.SGD(fresh.parameters(), lr=0.1))
    assert state["epoch"] == 3 and restored.keys() == best.keys()
    assert all(torch.equal(restored[k], best[k]) for k in best)
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in model.state_dict().items())


def test_checkpoint_of_an_earlier_version_with_last_json_still_resumes(tmp_path):
    model = create_model("seed_cnn", 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    save_checkpoint(tmp_path, model, optimizer, {"epoch": 4})
    tensors = load_file(str(tmp_path / "last.safetensors"))
    with safe_open(str(tmp_path / "last.safetensors"), framework="pt") as file:
        (tmp_path / "last.json").write_text(file.metadata()["state"])
    save_file(tensors, str(tmp_path / "last.safetensors"))  # no metadata, as earlier runs wrote it
    state, _ = load_checkpoint(tmp_path, create_model("seed_cnn", 2), optimizer)
    assert state["epoch"] == 4
