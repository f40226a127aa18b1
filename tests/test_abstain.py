"""`mediscan evaluate --abstain-below P`: the abstain block, the uncertain flags, the report's markers."""

import csv
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from mediscan.run_folder import RunFolder
from mediscan.cli import app
from mediscan.evaluation.calibration import abstain_summary
from mediscan.evaluation.stats import iter_resamples, metrics_with_ci
from mediscan.report.html import render_run_report
from mediscan.training.recipes import Recipe
from test_export import CLASSES, add_test_split, make_run

# top probabilities 0.95 0.9 0.85 0.8 | 0.75 0.65 0.6 0.55; correct: y y n y | y n y n
PROBS = np.array([[0.95, 0.05], [0.1, 0.9], [0.85, 0.15], [0.2, 0.8],
                  [0.75, 0.25], [0.35, 0.65], [0.6, 0.4], [0.45, 0.55]])
Y = np.array([0, 1, 1, 1, 0, 0, 0, 0])


def test_abstain_summary_hand_computed():
    block = abstain_summary(PROBS, Y, 0.8, n_resamples=200, seed=3)
    # kept at >= 0.8: the first four (0.8 itself is kept), three of them right
    assert block["threshold"] == 0.8 and block["n"] == 8
    assert block["n_kept"] == 4 and block["n_uncertain"] == 4
    assert block["coverage"]["value"] == 0.5 and block["accuracy"]["value"] == 0.75
    coverage = [np.mean(PROBS[row].max(1) >= 0.8) for idx in iter_resamples(Y, 200, seed=3) for row in idx]
    assert block["coverage"]["ci"] == pytest.approx(np.percentile(coverage, [2.5, 97.5]).tolist())
    lo, hi = block["accuracy"]["ci"]
    assert 0 <= lo <= 0.75 <= hi <= 1
    assert abstain_summary(PROBS, Y, 0.8, n_resamples=200, seed=3) == block
    json.dumps(block, allow_nan=False)


def test_abstain_summary_when_nothing_is_kept():
    block = abstain_summary(PROBS, Y, 0.99, n_resamples=50)
    assert block["coverage"] == {"value": 0.0, "ci": [0.0, 0.0]}
    assert block["accuracy"] == {"value": None, "ci": None} and block["n_uncertain"] == 8


@pytest.mark.parametrize("threshold", [1.0, -0.1, float("nan")])
def test_abstain_summary_rejects_thresholds_outside_0_1(threshold):
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        abstain_summary(PROBS, Y, threshold)


@pytest.mark.parametrize("value", ["1.5", "1", "-0.2"])
def test_cli_rejects_invalid_threshold_with_exit_code_2(tmp_path, value):
    result = CliRunner().invoke(app, ["evaluate", str(tmp_path), "--abstain-below", value])
    assert result.exit_code == 2
    message = " ".join(result.output.replace("│", " ").split())  # unwrap Rich's error box
    assert "'--abstain-below': the abstain threshold must lie in [0, 1)" in message


def test_report_shows_abstain_block_and_uncertain_marker(tmp_path):
    test = metrics_with_ci(Y, PROBS, ["a", "b"], n_resamples=50)
    test["abstain"] = abstain_summary(PROBS, Y, 0.8, n_resamples=50)
    test["worst_errors"] = [{"file": "x.png", "true": "b", "predicted": "a", "probability": 0.85,
                             "uncertain": False},
                            {"file": "y.png", "true": "a", "predicted": "b", "probability": 0.65,
                             "uncertain": True}]
    (tmp_path / "metrics.json").write_text(json.dumps({"test": test}))
    html = render_run_report(tmp_path).read_text()
    assert "Abstaining below 0.80: coverage 50.0%" in html and "accuracy on kept" in html
    assert "4 of 8 marked uncertain" in html
    assert html.count('<strong class="uncertain">uncertain</strong>') == 1
    assert html.index("y.png") < html.index('class="uncertain"')


@pytest.fixture
def tiny_run(tmp_path, monkeypatch):
    """An untrained bundle with a six-image test split and a recipe `evaluate` can rebuild."""
    monkeypatch.setenv("MEDISCAN_CACHE", str(tmp_path / "cache"))
    run = make_run(tmp_path / "run", model="resnet18", size=40)
    add_test_split(run, n=6)
    meta = RunFolder(run).read_meta()
    meta["recipe"] = Recipe("test", "tiny", model="resnet18", input_size=40, crop_foreground=False,
                            clip_percentiles=None).to_dict()
    RunFolder(run).write_meta(meta)
    return run


def _read_csv(path):
    with open(path) as handle:
        return list(csv.DictReader(handle))


def _check_against_csv(block: dict, rows: list[dict], threshold: float) -> None:
    """The abstain block and the uncertain column agree with a count over predictions.csv."""
    kept = [r for r in rows if float(r["probability"]) >= threshold]
    assert [r["uncertain"] for r in rows] == ["0" if r in kept else "1" for r in rows]
    assert block["n_uncertain"] == len(rows) - len(kept)
    assert block["coverage"]["value"] == pytest.approx(len(kept) / len(rows))
    assert block["accuracy"]["value"] == pytest.approx(np.mean([r["true"] == r["predicted"] for r in kept]))


def test_evaluate_cli_abstains_on_test_split_and_external_data(tiny_run):
    common = ["--no-progress", "--resamples", "50"]
    plain = CliRunner().invoke(app, ["evaluate", str(tiny_run), "--json", *common])
    assert plain.exit_code == 0, plain.output
    assert "abstain" not in json.loads(plain.stdout)["test"]
    rows = _read_csv(tiny_run / "predictions.csv")
    assert {r["uncertain"] for r in rows} == {"0"}  # DEFAULT_ABSTAIN_BELOW flags nothing
    threshold = float(np.median([float(r["probability"]) for r in rows]))

    result = CliRunner().invoke(app, ["evaluate", str(tiny_run), "--abstain-below", str(threshold), *common])
    assert result.exit_code == 0, result.output
    test = json.loads((tiny_run / "metrics.json").read_text())["test"]
    block = test["abstain"]
    assert block["threshold"] == threshold and 0 < block["n_uncertain"] < len(rows)
    _check_against_csv(block, _read_csv(tiny_run / "predictions.csv"), threshold)
    assert (f"abstain below {threshold:.2f}: coverage {block['coverage']['value']:.1%}, accuracy on kept "
            f"{block['accuracy']['value']:.1%} (n uncertain {block['n_uncertain']})") in result.output
    html = (tiny_run / "report.html").read_text()
    assert f"Abstaining below {threshold:.2f}" in html
    flagged = sum(e["uncertain"] for e in test["worst_errors"])
    assert html.count('<strong class="uncertain">uncertain</strong>') == flagged

    external = CliRunner().invoke(app, ["evaluate", str(tiny_run), str(tiny_run / "data"), "--json",
                                        "--abstain-below", str(threshold), *common])
    assert external.exit_code == 0, external.output
    metrics = json.loads(external.stdout)["metrics"]
    assert metrics["classes"] == list(CLASSES)
    _check_against_csv(metrics["abstain"], _read_csv(tiny_run / "evaluations" / "data_predictions.csv"),
                       threshold)
