"""Smoke tests of the bench scripts on tiny inputs: they run and print the expected columns and
JSON keys. No timing assertions: the figures come from the scripts, run by people."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mediscan.data.phantom import make_phantom
from mediscan.training.trainer import train

BENCH = Path(__file__).resolve().parents[1] / "bench"
TIMEOUT = 180  # generous: the two cores are shared; the whole file usually takes well under a minute


def run_script(name: str, *args: str, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    """Run bench/NAME with ARGS in a subprocess and return the finished process."""
    done = subprocess.run([sys.executable, str(BENCH / name), *args], capture_output=True,
                          text=True, env=env, timeout=TIMEOUT)
    if check:
        assert done.returncode == 0, done.stderr[-3000:]
    return done


def last_json(stdout: str) -> dict:
    """The JSON line every bench script prints last."""
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A private decoding cache, so the tests neither read nor fill the user's."""
    return {**os.environ, "MEDISCAN_CACHE": str(tmp_path_factory.mktemp("cache"))}


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    return make_phantom(tmp_path_factory.mktemp("phantom") / "data", n=40, size=64, seed=0)


@pytest.mark.slow
def test_train_speed_prints_a_row_per_recipe(phantom, env):
    done = run_script("train_speed.py", str(phantom), "--recipes", "tutorial-cnn", "--epochs", "1",
                      "--device", "cpu", "--max-images", "32", "--workers", "1", env=env)
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith("command: ") and "train_speed.py" in lines[0]
    header = next(line for line in lines if line.startswith("recipe"))
    for column in ("train img/s", "infer img/s", "s to val>=0.95", "test acc", "peak RSS MiB",
                   "peak GPU MiB", "2nd-run start s"):
        assert column in header
    result = last_json(done.stdout)
    assert result["same_split"] is True and result["max_images"] == 32
    (row,) = result["recipes"]
    assert row["recipe"] == "tutorial-cnn" and row["epochs"] == 1
    for key in ("train_images_per_second", "inference_images_per_second", "time_to_target",
                "test_accuracy", "peak_rss_mib", "peak_gpu_mib", "second_run_start"):
        assert key in row
    assert row["second_run_start"]["cache_hit"] is True
    assert set(row["time_to_target"]) == {"seconds", "epoch", "best_val_acc"}


@pytest.mark.slow
def test_cache_scale_streams_the_right_rows(tmp_path, env):
    done = run_script("cache_scale.py", "--gib", "0.02", "--size", "32", "--batches", "4",
                      "--batch-size", "32", "--dir", str(tmp_path), "--json", env=env)
    assert len(done.stdout.strip().splitlines()) == 1  # --json: the JSON line alone
    result = last_json(done.stdout)
    stream = result["stream"]
    assert stream["streamed"] is True and stream["wrong_rows"] == 0
    assert stream["images"] == 4 * 32 and stream["batch_shape"] == [32, 3, 32, 32]
    for key in ("images_per_second", "read_images_per_second", "peak_rss_sampled_mib"):
        assert key in stream
    assert result["peak_rss_mib"] > 0
    assert list(tmp_path.iterdir()) == []  # the file is deleted


@pytest.mark.slow
def test_cache_scale_refuses_without_disk_room(tmp_path, env):
    done = run_script("cache_scale.py", "--gib", "1000000", "--dir", str(tmp_path), env=env,
                      check=False)
    assert done.returncode != 0 and "not enough disk" in done.stderr


@pytest.fixture(scope="module")
def tiny_run(phantom, env, tmp_path_factory):
    """The demo recipe, one epoch at 32 px: a run folder for the scripts that read one."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MEDISCAN_CACHE", env["MEDISCAN_CACHE"])
        return train(phantom, recipe="demo", out=tmp_path_factory.mktemp("tiny") / "run", device="cpu",
                     progress=False, workers=1, epochs=1, input_size=32, evaluate=False)


@pytest.mark.slow
def test_shift_reports_clean_vs_shifted_sensitivity(tiny_run, env):
    run = tiny_run
    done = run_script("shift.py", str(run), "--phantom", "--n", "12", "--phantom-size", "64",
                      "--resamples", "50", "--device", "cpu", env=env)
    assert "tumour sensitivity" in done.stdout and "drop pts" in done.stdout
    result = last_json(done.stdout)
    (first,) = result["runs"]
    assert set(first["sets"]) == {"clean", "reframed", "phantom", "phantom-shifted"}
    for row in first["sets"].values():
        assert {"value", "ci"} <= set(row["sensitivity"]) and {"value", "ci"} <= set(row["specificity"])
    assert "sensitivity_drop" in first and "phantom_sensitivity_drop" in first
    assert set(result["reframed"]["modes"]) <= {"L", "RGB", "P", "RGBA"}


def test_shift_ablation_table_has_one_row_per_run():
    sys.path.insert(0, str(BENCH))
    try:
        import shift
    finally:
        sys.path.remove(str(BENCH))
    entry = {"value": 0.9, "ci": [0.8, 1.0]}
    sets = {name: {"n": 10, "accuracy": entry, "sensitivity": entry, "specificity": entry}
            for name in ("clean", "reframed")}
    runs = [{"run": f"runs/{name}", "recipe": name, "sets": sets, "sensitivity_drop": 0.0,
             "phantom_sensitivity_drop": None, "test_overlap": 0} for name in ("full", "no-crop")]
    frame = {"width": [150, 300], "low_width": [150, 200], "aspect": [0.7, 1.4], "gamma": [0.6, 1.6],
             "modes": {"L": 1}, "formats": {"PNG": 1}}
    summary = shift.render({"runs": runs, "reframed": frame}).split("\n\n")[1].splitlines()
    assert summary[0].startswith("run") and "drop pts" in summary[0]
    assert [line.split()[0] for line in summary[2:]] == ["full", "no-crop"]


@pytest.mark.slow
def test_cam_pointing_prints_hit_rates_per_layer(tiny_run, env):
    done = run_script("cam_pointing.py", str(tiny_run), "--layers", "layer4", "layer1,layer2",
                      "--methods", "gradcam,gradcam++", env=env)
    assert "hit rate" in done.stdout
    result = last_json(done.stdout)
    tumours = [k for k in json.loads((tiny_run / "split.json").read_text())["test"]
               if not k.startswith("notumor")]
    assert [(r["method"], r["layer"]) for r in result["results"]] == [
        (method, layer) for method in ("gradcam", "gradcam++") for layer in ("layer4", "layer1,layer2")]
    for row in result["results"]:
        assert row["images"] == len(tumours) and 0 <= row["hits"] <= row["images"]


@pytest.mark.slow
def test_inference_speed_times_both_backends_and_checks_they_agree(tiny_run, env):
    done = run_script("inference_speed.py", str(tiny_run), "--n", "8", "--batch", "4", "--repeats", "1",
                      env=env)
    assert done.stdout.startswith("command: ") and "images/s" in done.stdout
    result = last_json(done.stdout)
    assert set(result["backends"]) == {"torch", "onnx"} and 0 < result["images"] <= 8
    onnx = result["backends"]["onnx"]
    assert onnx["max_abs_probability_difference"] < 1e-4 and onnx["top_class_differs"] == 0
    assert all(row["images_per_second"] > 0 for row in result["backends"].values())


@pytest.mark.slow
def test_quantise_scores_the_int8_models_beside_fp32(tiny_run, env):
    done = run_script("quantise.py", str(tiny_run), "--n", "8", "--calibration", "8", "--batch", "4",
                      "--repeats", "1", env=env)
    assert done.stdout.startswith("command: ") and "x fp32" in done.stdout
    result = last_json(done.stdout)
    assert set(result["models"]) == {"fp32", "dynamic", "static"} and 0 < result["images"] <= 8
    fp32 = result["models"]["fp32"]
    assert fp32["max_abs_probability_difference"] == 0 and fp32["top_class_differs"] == 0
    for row in result["models"].values():
        assert row["images_per_second"] > 0 and 0 <= row["test_accuracy"] <= 1
    assert result["models"]["static"]["megabytes"] < fp32["megabytes"]  # int8 weights


@pytest.mark.slow
def test_ood_prints_flagged_fractions_and_auroc(tiny_run, env, tmp_path):
    done = run_script("ood.py", str(tiny_run), "--n", "6", "--chest", str(tmp_path / "none.npz"),
                      "--device", "cpu", env=env)
    assert "flagged %" in done.stdout and "AUROC ood" in done.stdout
    sets = last_json(done.stdout)["sets"]
    assert set(sets) == {"own test split", "noise", "blank", "photos", "synthetic", "all foreign"}
    assert sets["all foreign"]["n"] == 24 and 0.0 <= sets["noise"]["auroc_ood"] <= 1.0


def test_medmnist_prints_the_run_beside_the_paper(tmp_path, env):
    sys.path.insert(0, str(Path(__file__).parent))
    from modality_data import tiny_grey_npz

    data = tiny_grey_npz(tmp_path / "breastmnist.npz", n=32)
    done = run_script("medmnist.py", str(data), "--recipe", "default", "--epochs", "1", "--input-size", "32",
                      "--time-budget", "1m",
                      "--device", "cpu", "--workers", "1", "--out", str(tmp_path / "run"), env=env)
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith("command: ") and "medmnist.py" in lines[0]
    assert lines[1] == "breastmnist: test split (8 images)"
    assert lines[2].split() == ["method", "ACC", "AUC", "notes"]
    assert lines[4].startswith("mediscan default") and lines[5].split()[-3:] == ["0.863", "0.901", "paper"]
    result = last_json(done.stdout)
    assert result["set"] == "breastmnist" and result["epochs"] == 1 and result["test_images"] == 8
    assert 0 <= result["accuracy"] <= 1 and result["paper"]["ResNet-18 (28)"] == [0.901, 0.863]
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert [len(split[s]) for s in ("train", "val", "test")] == [32, 8, 8]  # the archive's own splits


def test_medmnist_refuses_multi_label_sets(tmp_path, env):
    import numpy as np

    path = tmp_path / "chestmnist.npz"
    np.savez(path, train_images=np.zeros((4, 28, 28), np.uint8), train_labels=np.zeros((4, 14), np.uint8))
    done = run_script("medmnist.py", str(path), "--device", "cpu", "--out", str(tmp_path / "run"), env=env,
                      check=False)
    assert done.returncode == 2 and "multi-label data (14 labels per image" in done.stderr


def test_medmnist_knows_every_2d_set_of_the_paper():
    sys.path.insert(0, str(BENCH))
    try:
        import medmnist
    finally:
        sys.path.remove(str(BENCH))
    assert len(medmnist.PAPER) == 12 and all(medmnist.PAPER[name]["ResNet-18 (28)"] for name in medmnist.PAPER)
    assert all(0 < v <= 1 for row in medmnist.PAPER.values() for pair in row.values() for v in pair)
    assert medmnist.recognise(Path("x/PneumoniaMNIST_224.npz")) == "pneumoniamnist"
    assert medmnist.recognise(Path("cells.npz")) is None


def test_soak_reports_status_classes_latency_and_server_memory(tmp_path, env):
    from test_export import make_run

    run = make_run(tmp_path / "soak")
    done = run_script("soak.py", str(run), "--requests", "10", "--concurrency", "2",
                      "--settle-seconds", "0.5", env=env)
    assert done.stdout.startswith("command: ") and "server RSS idle" in done.stdout
    result = last_json(done.stdout)
    assert result["requests"] == 10 and result["good_errors"] == 0 and result["responses_5xx"] == 0
    assert result["statuses"]["good"] == {"2xx": 5}
    for kind in ("nifti_bomb", "corrupt", "two_parts"):
        assert set(result["statuses"][kind]) <= {"4xx"}
    rss = result["rss_mib"]
    assert 0 < rss["idle"] <= rss["peak"] and rss["settled"] > 0


def test_gpu_check_refuses_without_cuda_and_drafts_the_readme_table(env):
    sys.path.insert(0, str(BENCH))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(BENCH))
    done = run_script("gpu_check.py", "/nonexistent", env=env, check=False)
    assert done.returncode != 0 and "no CUDA device" in done.stderr
    results = {"train": {"result": {"test_accuracy": {"value": 0.996}, "train_seconds": 14.2,
                                    "epochs_run": 40, "images_seen": 182_640}},
               "sources": {"result": {"runs": [{"contrasts": {"t1": {
                   "sensitivity_large": {"value": 0.93}, "specificity": {"value": 0.91}}}}]}}}
    table = gpu_check.markdown(results)
    assert "99.60% in 14 s of training, 40 epochs, 182,640 images seen" in table
    assert "| BraTS t1 | sensitivity (>= 1,500 px) 93.0%, specificity 91.0% |" in table


def fake_brats(root: Path, n: int = 6, free: int = 3) -> Path:
    """A BraTS-like folder: n tumour slices in four contrasts with masks, and tumour-free slices."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    rows = ["file,case,z,tumour_px,ET_px(4),ED_px(2),NCR_px(1),labels"]
    for i in range(n):
        name = f"case_z{i:03d}.png"
        mask = np.zeros((64, 64), np.uint8)
        if i % 3 == 0:
            mask[20:36, 24:40] = 2  # across the midline: no healthy twin
        else:
            mask[20:36, 4:16 + i] = 2
        for contrast in ("t1", "t1ce", "t2", "flair", "mask"):
            (root / contrast).mkdir(parents=True, exist_ok=True)
            image = mask if contrast == "mask" else rng.integers(0, 255, (64, 64), dtype=np.uint8)
            Image.fromarray(image).save(root / contrast / name)
        rows.append(f"{name},case,{i},{int((mask > 0).sum()) * (10 if i % 2 else 1)},0,0,0,2")
    for contrast in ("t1", "t1ce", "t2", "flair"):
        (root / "tumour-free" / contrast).mkdir(parents=True, exist_ok=True)
        for i in range(free):
            Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8)).save(
                root / "tumour-free" / contrast / f"free_{i}.png")
    (root / "index.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.mark.slow
def test_sources_counts_every_contrast_and_scores_the_cam(tiny_run, env, tmp_path):
    brats = fake_brats(tmp_path / "brats")
    done = run_script("sources.py", str(tiny_run), "--brats", str(brats), "--cam-n", "2", env=env)
    result = last_json(done.stdout)
    (run,) = result["runs"]
    assert set(run["contrasts"]) == {"t1", "t1ce", "t2", "flair"}
    for row in run["contrasts"].values():
        assert row["sensitivity"]["n"] == 6 and row["sensitivity_large"]["n"] == 3
        assert row["specificity"]["n"] == 3 and row["cam_pointing"]["n"] == 2
        assert 0 <= row["sensitivity"]["value"] <= 1 and 0 <= row["auroc_large_vs_free"] <= 1
        flagged = round(row["flagged"]["value"] * 9)
        assert row["flagged"]["n"] == 9 and row["specificity_unflagged"]["n"] <= 3
        assert row["sensitivity_large_unflagged"]["n"] + row["specificity_unflagged"]["n"] >= 6 - flagged
        assert row["specificity_twin"]["n"] == 4 and 0 <= row["auroc_tumour_vs_twin"] <= 1
        assert row["specificity_patch"]["n"] == 4 and 0 <= row["auroc_tumour_vs_patch"] <= 1
    assert "sensitivity % (>= 1500 px)" in done.stdout and "AUROC (large vs free)" in done.stdout
    assert "flagged unfamiliar %" in done.stdout and "specificity % (healthy twin)" in done.stdout
    assert "specificity % (patched twin)" in done.stdout and "worst patched twin spec %" in done.stdout


def test_train_step_times_each_variant_against_fp32(env):
    done = run_script("train_step.py", "--recipe", "demo", "--sizes", "32", "--batch", "4", "--warmup", "1",
                      "--steps", "2", "--variants", "fp32,bf16", env=env)
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith("command: ") and "train_step.py" in lines[0]
    assert any(line.startswith("size") and "train img/s" in line and "vs fp32" in line for line in lines)
    result = last_json(done.stdout)
    assert result["model"] == "resnet18" and result["batch"] == 4
    assert [(r["size"], r["variant"]) for r in result["rows"]] == [(32, "fp32"), (32, "bf16")]
    assert all(r["images_per_second"] > 0 for r in result["rows"]) and result["rows"][0]["vs_fp32"] == 1.0
    refused = run_script("train_step.py", "--variants", "fp16", env=env, check=False)
    assert refused.returncode == 2 and "unknown variants ['fp16']" in refused.stderr


def test_augment_speed_times_each_preset_on_grey_and_colour(env):
    done = run_script("augment_speed.py", "--presets", "mri", "light", "--size", "32", "--batch", "4",
                      "--repeats", "1", env=env)
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith("command: ") and "augment_speed.py" in lines[0]
    assert any(line.startswith("preset") and "ms / batch" in line for line in lines)
    result = last_json(done.stdout)
    assert [(r["preset"], r["kind"]) for r in result["rows"]] == [
        ("mri", "grey"), ("mri", "colour"), ("light", "grey"), ("light", "colour")]
    assert all(r["ms_per_batch"] > 0 and r["images_per_second"] > 0 for r in result["rows"])


@pytest.mark.slow
def test_budget_times_the_whole_train_command_on_generated_cells(env):
    done = run_script("budget.py", "--n", "48", "--budget", "15s", env=env)
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith("command: ") and "budget.py" in lines[0]
    header = next(line for line in lines if line.startswith("budget s"))
    for column in ("whole command s", "overrun %", "epochs", "images seen", "test acc"):
        assert column in header
    result = last_json(done.stdout)
    assert result["budget_seconds"] == 15.0 and result["epochs"] >= 1 and result["images_seen"] > 0
    assert result["wall_seconds"] > result["train_seconds"] > 0
    assert result["overrun_percent"] == pytest.approx(100 * (result["wall_seconds"] / 15 - 1), abs=0.5)


def test_budget_cells_are_small_colour_images_on_black():
    sys.path.insert(0, str(BENCH))
    try:
        import budget
    finally:
        sys.path.remove(str(BENCH))
    rng = np.random.default_rng(0)
    for parasitized in (True, False):
        cell = budget.cell_image(rng, parasitized)
        assert cell.ndim == 3 and 50 <= cell.shape[0] <= 64 and cell.shape[0] == cell.shape[1]
        middle = cell.shape[0] // 2
        assert cell[0, 0].max() == 0 and cell[middle, middle, 0] > 100  # a black corner, a pink cell

    def violet_pixels(cell: np.ndarray) -> int:
        return int((cell[..., 2].astype(int) - cell[..., 0] > 20).sum())

    assert violet_pixels(budget.cell_image(rng, True)) > 10  # the parasite's ring: bluer than red
    assert violet_pixels(budget.cell_image(rng, False)) == 0


def test_budget_tiny_npz_has_medmnist_layout_and_learnable_classes(tmp_path):
    sys.path.insert(0, str(BENCH))
    try:
        import budget
    finally:
        sys.path.remove(str(BENCH))
    from mediscan.data.folders import scan_folder

    path = budget.write_tiny_npz(tmp_path / "tiny.npz", {"train": 80, "val": 16, "test": 24})
    folder = scan_folder(path)
    assert len(folder) == 120 and len(folder.classes) <= 8
    assert [s.split for s in folder.samples].count("test") == 24
    with np.load(path) as arrays:
        images, labels = arrays["train_images"], arrays["train_labels"][:, 0]
    assert images.shape == (80, 28, 28) and images.dtype == np.uint8
    rows = images.astype(float).mean(axis=2)  # the blob's row follows the class
    assert np.corrcoef(rows.argmax(axis=1), labels)[0, 1] > 0.8
