"""mediscan.data.characterise: the preprocessing chosen for each kind of data, and why; wired into
training (model.json, report), recipes and flags override, ordinal kappa, .npz splits as given."""

import csv
import json

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import cohen_kappa_score
from typer.testing import CliRunner

import modality_data
from mediscan.cli import app
from mediscan.augment import get_preset
from mediscan.data.characterise import characterise, sample_indices
from mediscan.data.folders import scan_folder
from mediscan.data.phantom import make_phantom
from mediscan.evaluation.runner import Scored, score_metrics
from mediscan.run_folder import RunFolder
from mediscan.training.recipes import Recipe, get_recipe
from mediscan.data.prepare import choose_preprocessing, preprocess_for
from mediscan.training.trainer import augment_config, train
from mediscan.transforms import Preprocess, foreground_box


def _found(root):
    return characterise(scan_folder(root))


def test_head_on_black_gets_the_head_crop_and_percentile_clip(tmp_path):
    found = _found(make_phantom(tmp_path / "phantom", n=12, size=128, seed=0))
    assert (found.kind, found.crop_foreground, found.clip_percentiles) == ("object-on-dark", True, (0.5, 99.5))
    assert not found.colour and found.normalization == "model"
    assert found.background_level <= 24 and found.box < 0.85
    assert found.reasons[0].startswith("grey: mean chroma 0.0 < 4")
    assert "dark background" in found.reasons[1] and found.reasons[1].endswith("head crop")
    assert "foreground percentiles 0.5-99.5" in found.reasons[2]


def test_grey_images_stored_as_rgb_jpeg_are_grey(tmp_path):
    root = make_phantom(tmp_path / "phantom", n=8, size=128, seed=1)
    for path in root.rglob("*.png"):
        Image.open(path).convert("RGB").save(path.with_suffix(".jpg"), quality=75)
        path.unlink()
    found = _found(root)
    assert not found.colour and found.chroma < 4 and found.crop_foreground


def test_tiny_grey_medmnist_like_set_gets_no_crop(tmp_path):
    found = _found(modality_data.tiny_grey_npz(tmp_path / "pneumoniamnist.npz"))
    assert (found.kind, found.crop_foreground, found.clip_percentiles) == ("tiny", False, None)
    assert found.min_side == 28 and found.normalization == "model"
    assert "tiny images (28x28 px" in found.reasons[1] and "no crop" in found.reasons[1]


def test_colour_microscopy_keeps_colour_with_dataset_statistics(tmp_path):
    found = _found(modality_data.microscopy(tmp_path / "cells"))
    assert found.colour and found.chroma > 20
    assert (found.kind, found.crop_foreground, found.clip_percentiles) == ("full-frame", False, None)
    assert found.normalization == "dataset"
    assert found.reasons[0].startswith("colour: mean chroma")
    assert "per-channel dataset mean/std" in found.reasons[0]
    assert found.reasons[1].startswith("full frame") and "no crop" in found.reasons[1]


def test_fundus_gets_a_field_of_view_crop_without_clipping(tmp_path):
    root = modality_data.fundus(tmp_path / "fundus")
    found = _found(root)
    assert found.colour and found.kind == "disc"
    assert (found.crop_foreground, found.clip_percentiles, found.normalization) == (True, None, "dataset")
    assert "circular field of view" in found.reasons[1]
    image = np.asarray(Image.open(next(root.rglob("*.jpg"))))
    disc = np.argwhere(image.max(axis=2) > 30)
    top, bottom, left, right = foreground_box(image.max(axis=2))
    assert abs(top - disc[:, 0].min()) <= 8 and abs(bottom - disc[:, 0].max()) <= 8
    assert abs(left - disc[:, 1].min()) <= 8 and abs(right - disc[:, 1].max()) <= 8
    cropped = Preprocess(size=64, crop_foreground=True)(image)
    assert cropped[:, :3, :3].max() < 20  # the corners outside the disc stay black
    assert cropped[:, 32, 32].min() > 30  # the disc fills the middle


def test_ultrasound_fan_filling_the_frame_gets_no_crop(tmp_path):
    found = _found(modality_data.ultrasound(tmp_path / "us"))
    assert not found.colour and found.box > 0.85
    assert (found.kind, found.crop_foreground, found.clip_percentiles) == ("full-frame", False, None)
    assert "box covers" in found.reasons[1] and found.reasons[1].endswith("no crop")


def test_sample_is_spread_over_classes_and_leaves_the_test_split_out(tmp_path):
    folder = scan_folder(modality_data.tiny_grey_npz(tmp_path / "x.npz", n=40))
    picked = sample_indices(folder, limit=20)
    assert len(picked) == 20 and len(set(picked.tolist())) == 20
    assert np.bincount(folder.labels[picked]).tolist() == [10, 10]
    assert {folder.samples[i].split for i in picked} <= {"train", "val"}


def test_recipes_fix_or_choose_and_flags_override(tmp_path):
    folder = scan_folder(make_phantom(tmp_path / "phantom", n=8, size=128, seed=0))
    chosen, found = choose_preprocessing(folder, get_recipe("default"), progress=False)
    assert found is not None and (chosen.crop_foreground, chosen.clip_percentiles) == (True, (0.5, 99.5))
    assert (chosen.channels, chosen.normalization) == (3, "model")
    no_crop, _ = choose_preprocessing(folder, get_recipe("default").with_overrides(crop_foreground=False),
                                      progress=False)
    assert (no_crop.crop_foreground, no_crop.clip_percentiles) == (False, (0.5, 99.5))
    demo, _ = choose_preprocessing(folder, get_recipe("demo"), progress=False)
    assert preprocess_for(demo) == Preprocess(size=96, crop_foreground=False, clip_percentiles=(0.5, 99.5))
    tutorial = get_recipe("tutorial-resnet18")
    assert choose_preprocessing(folder, tutorial, progress=False) == (tutorial, None)
    assert tutorial.normalization == "dataset" and tutorial.crop_foreground is False
    with pytest.raises(ValueError, match="still 'auto'"):
        preprocess_for(get_recipe("default"))
    assert Recipe.from_dict(get_recipe("default").to_dict()) == get_recipe("default")


@pytest.mark.parametrize("make, preset", [
    (lambda root: make_phantom(root, n=8, size=128, seed=0), "mri"),
    (lambda root: modality_data.tiny_grey_npz(root.with_suffix(".npz")), "light"),
    (lambda root: modality_data.microscopy(root), "strong"),
])
def test_augmentation_is_chosen_from_the_data_and_says_why(tmp_path, make, preset):
    folder = scan_folder(make(tmp_path / "data"))
    chosen, found = choose_preprocessing(folder, get_recipe("cpu"), progress=False)
    assert chosen.augment == preset
    assert sum(r.startswith(f"augmentation: {preset} (") for r in found.reasons) == 1
    balance = "layout" if preset == "mri" else "sampler"  # look-alike groups only where sources differ in view
    assert chosen.balance == balance and sum(r.startswith("sampling: ") for r in found.reasons) == 1
    light = get_preset("light")
    assert (light.blur, light.noise, light.downsample) == (0.0, 0.0, 1.0)
    fixed, fixed_found = choose_preprocessing(folder, get_recipe("cpu").with_overrides(augment="none"),
                                              progress=False)
    assert fixed.augment == "none" and not any(r.startswith("augmentation") for r in fixed_found.reasons)
    assert fixed.balance == "sampler"
    given, given_found = choose_preprocessing(folder, get_recipe("cpu").with_overrides(balance="sources"),
                                              progress=False)
    assert given.balance == "sources" and not any(r.startswith("sampling") for r in given_found.reasons)
    mirrored = preset == "mri"  # the mirror channel only for grey heads on black
    assert chosen.mirror_channel is mirrored and preprocess_for(chosen).mirror_channel is mirrored
    assert sum(r.startswith("mirror channel: ") for r in found.reasons) == int(mirrored)
    assert fixed.mirror_channel is False  # the augmentation given is not "mri"
    off, _ = choose_preprocessing(folder, get_recipe("cpu").with_overrides(mirror_channel=False), progress=False)
    assert off.mirror_channel is False


def test_tiny_images_get_the_recipes_tiny_input_size_unless_a_size_is_given(tmp_path):
    folder = scan_folder(modality_data.tiny_grey_npz(tmp_path / "pneumoniamnist.npz"))
    cpu = get_recipe("cpu")
    chosen, found = choose_preprocessing(folder, cpu, progress=False)
    assert (cpu.input_size, cpu.tiny_input_size, chosen.input_size) == (128, 96, 96)
    assert preprocess_for(chosen).size == 96
    assert any("input 96 px: tiny images (28 px) upsampled 3.4x" in reason for reason in found.reasons)
    given, given_found = choose_preprocessing(folder, cpu.with_overrides(input_size=64), progress=False)
    assert given.input_size == 64 and not any(r.startswith("input") for r in given_found.reasons)
    head = scan_folder(make_phantom(tmp_path / "phantom", n=8, size=128, seed=0))
    assert choose_preprocessing(head, cpu, progress=False)[0].input_size == 128


def test_tiny_images_get_the_recipes_tiny_learning_rate_unless_a_rate_is_given(tmp_path):
    folder = scan_folder(modality_data.tiny_grey_npz(tmp_path / "pneumoniamnist.npz"))
    cpu = get_recipe("cpu")
    chosen, found = choose_preprocessing(folder, cpu, progress=False)
    assert (cpu.lr, cpu.tiny_lr, chosen.lr) == (4e-3, 2e-3, 2e-3)
    assert any("learning rate 0.002: the recipe's for tiny images" in reason for reason in found.reasons)
    given, given_found = choose_preprocessing(folder, cpu.with_overrides(lr=1e-3), progress=False)
    assert given.lr == 1e-3 and not any(r.startswith("learning rate") for r in given_found.reasons)
    head = scan_folder(make_phantom(tmp_path / "phantom", n=8, size=128, seed=0))
    assert choose_preprocessing(head, cpu, progress=False)[0].lr == 4e-3


def test_tiny_images_get_flip_tta_unless_told_or_a_mirror_changes_the_class(tmp_path):
    folder = scan_folder(modality_data.tiny_grey_npz(tmp_path / "pneumoniamnist.npz"))
    cpu = get_recipe("cpu")
    chosen, found = choose_preprocessing(folder, cpu, progress=False)
    assert (cpu.tta, cpu.tiny_tta, chosen.tta) == (False, True, True)
    assert "test-time augmentation: predictions averaged with the left-right mirror" in found.reasons[-1]
    off, off_found = choose_preprocessing(folder, cpu.with_overrides(tta=False), progress=False)
    assert off.tta is False and not any(r.startswith("test-time") for r in off_found.reasons)
    organs = scan_folder(modality_data.organ_sides_npz(tmp_path / "organamnist.npz"))
    assert choose_preprocessing(organs, cpu, progress=False)[0].tta is False
    head = scan_folder(make_phantom(tmp_path / "phantom", n=8, size=128, seed=0))
    assert choose_preprocessing(head, cpu, progress=False)[0].tta is False


def test_flips_go_when_a_mirror_changes_the_class_and_stay_otherwise(tmp_path):
    organs = scan_folder(modality_data.organ_sides_npz(tmp_path / "organamnist.npz"))
    cpu = get_recipe("cpu").with_overrides(tta=True)
    chosen, found = choose_preprocessing(organs, cpu, progress=False)
    assert (found.mirrored, found.flip, chosen.flip, chosen.tta) == ([("0", "1")], False, False, False)
    assert any(r.startswith("no flips") and "0 <-> 1" in r for r in found.reasons)
    assert get_preset(chosen.augment).hflip > 0 and augment_config(chosen).hflip == 0
    forced, _ = choose_preprocessing(organs, cpu.with_overrides(flip=True), progress=False)
    assert (forced.flip, forced.tta) == (True, True)
    assert augment_config(forced).hflip == get_preset(forced.augment).hflip
    head = scan_folder(make_phantom(tmp_path / "phantom", n=8, size=128, seed=0))
    kept, kept_found = choose_preprocessing(head, cpu, progress=False)
    assert (kept.flip, kept.tta) == (True, True) and augment_config(kept).hflip == get_preset("mri").hflip
    assert any(r.startswith("flips kept") for r in kept_found.reasons)
    no_flip, _ = choose_preprocessing(head, cpu.with_overrides(flip=False), progress=False)
    assert (no_flip.flip, no_flip.tta, augment_config(no_flip).hflip) == (False, False, 0)


def test_multi_label_npz_is_refused_clearly(tmp_path):
    path = tmp_path / "chestmnist.npz"
    np.savez(path, train_images=np.zeros((4, 28, 28), np.uint8), train_labels=np.zeros((4, 14), np.uint8))
    with pytest.raises(ValueError, match=r"multi-label data \(14 labels per image in train_labels\) is not "
                                         r"supported yet"):
        scan_folder(path)


@pytest.fixture(scope="module")
def ordinal_run(tmp_path_factory):
    """One epoch on a tiny generated npz with the default recipe, labels declared ordinal."""
    root = tmp_path_factory.mktemp("npz")
    data = modality_data.tiny_grey_npz(root / "retinamnist.npz", n=40)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MEDISCAN_CACHE", str(root / "cache"))
        return train(data, recipe="default", out=root / "run", device="cpu", progress=False, workers=1,
                     epochs=1, input_size=32, batch_size=16, ordinal=True, group_duplicates=False), data


def test_training_records_the_choice_and_uses_the_official_splits(ordinal_run):
    run, data = ordinal_run
    meta = json.loads((run / "model.json").read_text())
    assert meta["preprocess"] == {"size": 32, "channels": 3, "fit": "pad", "crop_foreground": False,
                                  "clip_percentiles": None}
    assert meta["characterisation"]["kind"] == "tiny" and meta["preprocess_reasons"][1].startswith("tiny images")
    assert meta["recipe"]["crop_foreground"] is False and meta["recipe"]["normalization"] == "model"
    split = json.loads((run / "split.json").read_text())
    assert split["train"] == [f"{data.name}#{i}" for i in range(40)]
    assert split["val"] == [f"{data.name}#{i}" for i in range(40, 50)]
    assert split["test"] == [f"{data.name}#{i}" for i in range(50, 60)]
    html = (run / "report.html").read_text()
    assert "Chosen from the data" in html and "tiny images (28x28 px" in html


def test_an_npz_run_is_evaluated_again_on_its_official_test_split(ordinal_run):
    run, data = ordinal_run
    assert json.loads((run / "model.json").read_text())["data"]["root"] == str(data)  # the archive, not its folder
    first = json.loads((run / "metrics.json").read_text())["test"]
    result = CliRunner().invoke(app, ["evaluate", str(run), "--json", "--no-progress"])
    assert result.exit_code == 0, result.output
    again = json.loads((run / "metrics.json").read_text())["test"]
    assert again["n"] == first["n"] == 10 and again["accuracy"] == pytest.approx(first["accuracy"])


def test_ordinal_runs_report_quadratic_weighted_kappa(ordinal_run):
    run, _ = ordinal_run
    test = json.loads((run / "metrics.json").read_text())["test"]
    with open(run / "predictions.csv") as handle:
        rows = list(csv.DictReader(handle))
    truth, predicted = [r["true"] for r in rows], [r["predicted"] for r in rows]
    defined = len(set(truth) | set(predicted)) > 1
    expected = cohen_kappa_score(truth, predicted, weights="quadratic") if defined else None
    assert test["quadratic_kappa"] == pytest.approx(expected)
    assert test["headline"]["quadratic_kappa"]["value"] == pytest.approx(expected)
    assert "Quadratic-weighted kappa" in (run / "report.html").read_text()


def test_kappa_of_ordered_grades_with_interval():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(5), 40)
    predicted = np.clip(y + rng.choice([-1, 0, 0, 0, 1, 2], len(y)), 0, 4)
    probs = np.eye(5)[predicted] * 0.8 + 0.04
    scored = Scored(y, probs, [str(k) for k in range(5)], [str(i) for i in range(len(y))],
                    np.zeros((len(y), 1, 2, 2), np.uint8), ordinal=True)
    result = score_metrics(scored, n_resamples=200)
    expected = cohen_kappa_score(y, predicted, weights="quadratic")
    assert result["quadratic_kappa"] == pytest.approx(expected) and 0.6 < expected < 1
    low, high = result["headline"]["quadratic_kappa"]["ci"]
    assert low < expected < high and high - low < 0.2
    assert "quadratic_kappa" not in score_metrics(Scored(y, probs, scored.classes, scored.sources,
                                                         scored.images), n_resamples=10)


def test_a_large_validation_split_is_sampled_for_the_run_and_kept_whole_in_split_json(tmp_path, monkeypatch):
    import mediscan.data.prepare as prepare

    monkeypatch.setattr(prepare, "MAX_VAL_IMAGES", 6)
    monkeypatch.setenv("MEDISCAN_CACHE", str(tmp_path / "cache"))
    data = modality_data.tiny_grey_npz(tmp_path / "pneumoniamnist.npz", n=40)
    run = RunFolder(train(data, recipe="cpu", out=tmp_path / "run", device="cpu", progress=False, workers=1,
                          epochs=1, input_size=32, batch_size=16, time_budget=0))
    assert len(run.read_split().val) == 10 and run.read_metrics()["split"]["val"] == 6
    assert "validation: 6 of the 10 validation images (random sample), each epoch and for calibration" in \
        run.read_meta()["preprocess_reasons"]
    folder = scan_folder(data)
    whole = prepare.Prepared(folder, None, None, {"train": np.arange(40), "val": np.arange(40, 50),
                                                  "test": np.arange(50, 60)}, None, (0,), (1,))
    capped, reason = prepare.capped_validation(whole, limit=4, seed=1)
    assert len(capped.indices["val"]) == 4 and set(capped.indices["val"]) <= set(range(40, 50))
    np.testing.assert_array_equal(capped.indices["val"], prepare.capped_validation(whole, limit=4, seed=1)[0]
                                  .indices["val"])
    assert capped.indices["train"] is whole.indices["train"] and reason.startswith("validation: 4 of the 10")
    assert prepare.capped_validation(whole, limit=10) == (whole, None)
