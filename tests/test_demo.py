"""`mediscan demo` end to end on a smaller phantom: trains, evaluates, reports, suggests next steps."""

import json

import pytest
from typer.testing import CliRunner

from mediscan.cli import app


@pytest.mark.slow
def test_demo_trains_a_good_model_and_writes_a_report(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDISCAN_CACHE", str(tmp_path / "cache"))
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "demo"), "--n", "1000",
                                      "--epochs", "10", "--no-progress", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "mediscan predict" in result.output and "mediscan serve" in result.output
    run = tmp_path / "demo" / "run"
    metrics = json.loads((run / "metrics.json").read_text())["test"]
    assert metrics["accuracy"] >= 0.75  # chance is 0.25; the full demo (2,000 images) reaches ~98%
    report = (run / "report.html").read_text()
    assert "not a medical device" in report.lower()
    assert (tmp_path / "demo" / "phantom" / "masses.json").exists()
    localisation = json.loads((run / "localisation.json").read_text())
    tumours = [k for k in json.loads((run / "split.json").read_text())["test"] if not k.startswith("notumor")]
    assert localisation["images"] == len(tumours) and 0 <= localisation["hits"] <= len(tumours)
    assert "peak inside the planted mass" in result.output and 'id="localisation"' in report
    assert list((run / "plots").glob("cam_*_*.png"))
