"""`--time-budget` bounds the whole command: decoding, training, calibration, evaluation, report."""

import json
import time

import pytest

from mediscan.training import time_plan
from mediscan.training.time_plan import TimePlan
from mediscan.training.trainer import default_recipe_for, train
from shapes_data import make_shapes

import torch


def test_finish_reserve_counts_validation_test_tta_and_report():
    plan = TimePlan(budget=100.0, n_val=200, n_test=300, tta=True, n_ood_fit=400, started=0.0)
    plan.observe(images=100, seconds=1.0)  # 10 ms an image
    passes = 200 + 2 * (400 + 200 + 300)
    report = time_plan.REPORT_SECONDS + 300 * time_plan.REPORT_SECONDS_PER_TEST_IMAGE  # grows with the test
    assert plan.finish_seconds() == pytest.approx(passes * 0.01 + report)


def test_training_gets_what_the_budget_leaves():
    plan = TimePlan(budget=100.0, n_val=100, n_test=100, started=0.0)
    plan.observe(images=100, seconds=2.0)
    report = time_plan.REPORT_SECONDS + 100 * time_plan.REPORT_SECONDS_PER_TEST_IMAGE
    # the last validation pass and the test split: the OOD threshold reuses that pass's features
    expected = 100 * (1 - time_plan.SAFETY) - 10.0 - (100 * 0.02 + 100 * 0.02 + report)
    assert plan.training_seconds(loop_started=10.0) == pytest.approx(expected)
    assert TimePlan(budget=None, n_val=1, n_test=1).training_seconds(0.0) is None
    assert plan.training_seconds(loop_started=1e6) == 1.0  # never negative


def test_chosen_flip_tta_is_dropped_when_mirroring_would_cost_more_than_its_share():
    from mediscan.training.recipes import get_recipe
    from mediscan.training.trainer import _tta_within

    chosen = get_recipe("cpu").with_overrides(tta=True).with_overrides(tiny_tta=True)  # as tta_for sets it
    cheap = TimePlan(budget=600.0, n_val=500, n_test=600, tta=True, n_ood_fit=2000, started=0.0)
    cheap.observe(images=100, seconds=0.25)  # 3,100 mirrored images: 7.75 s of 600
    assert cheap.tta_affordable() and _tta_within(cheap, chosen, _prepared(), announce=False).tta
    large = TimePlan(budget=600.0, n_val=5000, n_test=47280, tta=True, n_ood_fit=2000, started=0.0)
    large.observe(images=100, seconds=0.25)  # 54,280 mirrored images: 136 s, more than 5% of 600
    before = large.finish_seconds()
    prepared = _prepared()
    kept = _tta_within(large, chosen, prepared, announce=False)
    assert not kept.tta and not large.tta and large.finish_seconds() < before - 130
    reasons = prepared.characterisation.reasons  # the choice replaced by why it was dropped
    assert len(reasons) == 2 and reasons[0] == "grey" and reasons[1].startswith("test-time augmentation off")
    asked = get_recipe("cpu").with_overrides(tta=True)  # --tta: the user's choice stands
    assert _tta_within(large, asked, _prepared(), announce=False).tta


def _prepared():
    """Just enough of a Prepared for the reasons a plan changes: the choice of TTA among others."""
    from types import SimpleNamespace

    from mediscan.data.prepare import TTA_REASON

    return SimpleNamespace(characterisation=SimpleNamespace(reasons=["grey", f"{TTA_REASON} (tiny images)"]))


def test_default_recipe_follows_the_device():
    assert default_recipe_for(torch.device("cpu")) == "cpu"
    assert default_recipe_for(torch.device("cuda")) == "default"


@pytest.mark.slow
def test_whole_train_call_ends_within_its_budget(tmp_path):
    data = make_shapes(tmp_path / "data", n_per_class=80)
    budget = 40.0  # the finishing reserve has a fixed 10 s (time_plan.REPORT_SECONDS): 30 s left it borderline
    began = time.perf_counter()
    run = train(data, recipe="cpu", out=tmp_path / "run", device="cpu", progress=False, workers=1,
                cache_dir=tmp_path / "cache", time_budget=budget, epochs=1000, model="resnet18",
                pretrained=False, freeze_early=False, input_size=48, crop_foreground=False)
    elapsed = time.perf_counter() - began
    meta = json.loads((run / "model.json").read_text())
    assert elapsed <= budget * 1.05 + 1.0, f"train took {elapsed:.1f}s of a {budget:.0f}s budget"
    assert elapsed >= budget * 0.6, "the budget was left mostly unused"
    assert meta["epochs_run"] >= 1 and meta["images_seen"] > 0
    assert (run / "metrics.json").exists() and (run / "report.html").exists()
