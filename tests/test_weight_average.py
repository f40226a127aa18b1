"""Recipe `ema`: the run validates and ships a moving average of its weights, and resumes it."""

import pytest
import torch
from safetensors.torch import load_file
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from mediscan.bundle import load_checkpoint, save_checkpoint
from mediscan.models import create_model
from mediscan.training import trainer
from mediscan.training.optim import create_weight_average
from mediscan.training.recipes import get_recipe
from mediscan.training.trainer import train
from shapes_data import make_shapes

TINY = dict(model="resnet18", input_size=32, batch_size=16, lr=3e-3, augment="demo", crop_foreground=False,
            group_duplicates=False, device="cpu", progress=False, workers=1, evaluate=False)


def test_no_average_unless_the_recipe_asks_and_a_bad_decay_is_refused():
    model = create_model("seed_cnn", 2)
    assert create_weight_average(model, get_recipe("cpu").with_overrides(ema=0)) is None
    assert isinstance(create_weight_average(model, get_recipe("cpu").with_overrides(ema=0.99)), AveragedModel)
    with pytest.raises(ValueError, match="between 0 and 1"):
        create_weight_average(model, get_recipe("cpu").with_overrides(ema=1.5))


def test_checkpoint_restores_the_weight_average(tmp_path):
    torch.manual_seed(0)
    model = create_model("seed_cnn", 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=True)
    for _ in range(3):
        optimizer.zero_grad()
        model(torch.randn(4, 3, 130, 130)).sum().backward()
        optimizer.step()
        averaged.update_parameters(model)
    save_checkpoint(tmp_path, model, optimizer, {"epoch": 1}, averaged=averaged)
    fresh = create_model("seed_cnn", 2)
    restored = AveragedModel(fresh, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=True)
    _, best = load_checkpoint(tmp_path, fresh, torch.optim.SGD(fresh.parameters(), lr=0.1), restored)
    assert int(restored.n_averaged) == 3
    for name, value in averaged.module.state_dict().items():  # no separate best: the average is it
        torch.testing.assert_close(best[name], value)
    for name, value in averaged.state_dict().items():
        torch.testing.assert_close(restored.state_dict()[name], value)
    assert not torch.equal(restored.module.features[0].weight, fresh.features[0].weight)  # the average, kept apart


def test_run_ships_the_averaged_weights_not_the_last_step(tmp_path, monkeypatch):
    data = make_shapes(tmp_path / "data", n_per_class=12)
    validated = []

    def improving(model, prepared, device, criterion, plan=None, class_bias=None):
        validated.append(model)
        return {"val_loss": 1.0 / len(validated), "val_acc": 0.5 + 0.1 * len(validated)}, None

    monkeypatch.setattr(trainer, "validate", improving)
    run = train(data, recipe="default", out=tmp_path / "run", epochs=2, ema=0.9, cache_dir=tmp_path / "c", **TINY)
    checkpoint = load_file(str(run / "last.safetensors"))
    shipped = load_file(str(run / "model.safetensors"))
    assert int(checkpoint["ema.n_averaged"]) > 1  # updated after every optimizer step
    assert all(torch.equal(shipped[k], checkpoint[f"ema.module.{k}"]) for k in shipped)  # the last epoch was best
    assert not all(torch.equal(shipped[k], checkpoint[f"model.{k}"]) for k in shipped)
    assert len(validated) == 2 and validated[0] is validated[1]  # the one averaged model, every epoch
