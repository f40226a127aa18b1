"""Learning-rate schedules as functions of progress."""

import time

import pytest

from mediscan.training.loop import Budget
from mediscan.training.schedule import lr_at, size_at


@pytest.mark.parametrize("schedule,progress,expected", [
    ("constant", 0.7, 1.0),
    ("cosine", 0.0, 1.0),
    ("cosine", 0.5, 0.5),
    ("cosine", 1.0, 0.0),
    ("onecycle", 0.0, 0.04),
    ("onecycle", 0.1, 1.0),
    ("onecycle", 1.0, 1e-3),
])
def test_lr_at(schedule, progress, expected):
    assert lr_at(progress, base_lr=1.0, schedule=schedule, warmup=0.1) == pytest.approx(expected, abs=1e-9)


def test_onecycle_peaks_after_warmup_and_decreases():
    values = [lr_at(p / 100, base_lr=1.0, schedule="onecycle") for p in range(101)]
    peak = values.index(max(values))
    assert peak == 10
    assert all(a >= b for a, b in zip(values[peak:], values[peak + 1:]))


def test_budget_progress_uses_the_larger_of_steps_and_time():
    budget = Budget(total_steps=100, seconds=1e9, started=time.perf_counter())
    budget.step = 50
    assert budget.progress == pytest.approx(0.5, abs=1e-3)
    budget.seconds = 1e-9
    assert budget.exhausted


def test_unknown_schedule():
    with pytest.raises(ValueError, match="onecycle"):
        lr_at(0.5, base_lr=1.0, schedule="triangle")


def test_progressive_size_grows_in_steps_to_full_size_by_the_ramp_end():
    sizes = [size_at(p / 20, start=96, full=128, ramp_end=0.6) for p in range(21)]
    assert sizes[0] == 96 and sizes == sorted(sizes)
    assert set(sizes) == {96, 112, 128} and all(s == 128 for s in sizes[12:])
    assert size_at(0.0, start=128, full=96, ramp_end=0.5) == 96  # a start above full: full size


def test_pipeline_shrinks_batches_by_the_schedule():
    import torch

    from mediscan.training.loop import BatchPipeline

    pipeline = BatchPipeline(images=torch.zeros(4, 1, 64, 64, dtype=torch.uint8), labels=torch.zeros(4).long(),
                             mean=torch.zeros(1, 1, 1, 1), std=torch.ones(1, 1, 1, 1), device=torch.device("cpu"),
                             size_at=lambda progress: 32 if progress < 0.5 else 64)
    assert pipeline.batch(torch.arange(4), progress=0.1)[0].shape[-2:] == (32, 32)
    assert pipeline.batch(torch.arange(4), progress=0.9)[0].shape[-2:] == (64, 64)


def test_pipeline_redraws_the_mirror_channel_after_painting_lesions():
    import torch

    from mediscan.training.loop import BatchPipeline

    def paint(x, y):  # a "lesion" in the left half of every image, as LesionSynthesis paints all channels
        x = x.clone()
        x[:, :, 8:16, 2:10] = 1.0
        return x, torch.ones_like(y)

    images = torch.zeros(2, 3, 32, 32, dtype=torch.uint8)
    pipeline = BatchPipeline(images=images, labels=torch.zeros(2).long(), mean=torch.zeros(1, 3, 1, 1),
                             std=torch.ones(1, 3, 1, 1), device=torch.device("cpu"), lesions=paint,
                             mirror_channel=True)
    x, y = pipeline.batch(torch.arange(2))
    assert torch.equal(x[:, 2], x[:, 0].flip(-1)) and y.tolist() == [1, 1]
    assert x[:, 0, 8:16, 2:10].min() == 1 and x[:, 2, 8:16, 2:10].max() == 0  # the lesion has no twin


def test_budget_expects_the_steps_its_seconds_fit_at_the_pace_so_far():
    budget = Budget(total_steps=300, seconds=100.0, started=time.perf_counter() - 10.0)
    assert budget.expected_steps() == 300  # no step yet: nothing measured
    budget.step = 20  # 0.5 s a step: 100 s fit about 200 steps
    assert 190 <= budget.expected_steps() <= 200
    assert Budget(total_steps=300, step=20).expected_steps() == 300  # no seconds: the steps decide


def test_epoch_label_shows_the_epochs_the_budget_fits():
    from mediscan.training.trainer import _epoch_label

    budget = Budget(total_steps=30 * 10, seconds=100.0, started=time.perf_counter() - 10.0, step=20)
    assert _epoch_label(3, 30, budget) in {"epoch 3/~19", "epoch 3/~20"}  # 10 steps an epoch, ~200 steps fit
    assert _epoch_label(3, 30, Budget(total_steps=300)) == "epoch 3/30"
    late = Budget(total_steps=300, seconds=100.0, started=time.perf_counter() - 90.0, step=20)
    assert _epoch_label(3, 30, late) == "epoch 3/~3"  # never fewer than the epoch being trained
