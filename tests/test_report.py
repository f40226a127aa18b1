"""Plots write PNGs; the HTML reports are self-contained, well-formed and have their sections."""

import csv
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from mediscan.evaluation.calibration import (
    apply_temperature,
    calibration_summary,
    reliability_curve,
    selective_prediction,
)
from mediscan.evaluation.corruptions import CORRUPTIONS
from mediscan.evaluation.robustness import robustness_results
from mediscan.evaluation.stats import metrics_with_ci, pairwise_mcnemar
from mediscan.report import plots
from mediscan.report.html import render_comparison_report, render_run_report

CLASSES = ["glioma", "meningioma", "notumor", "pituitary"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
VOID = {"meta", "img", "br", "hr", "input", "link", "source", "col", "area", "base", "wbr"}


class Page(HTMLParser):
    """Collects ids, URL attributes and tag-balance errors of an HTML document."""

    def __init__(self):
        super().__init__()
        self.stack, self.errors, self.urls, self.imgs, self.metas = [], [], [], [], []
        self.ids = set()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        self.urls += [v for k, v in attrs if k in ("src", "href", "action", "poster") and v]
        if tag == "img":
            self.imgs.append(a.get("src", ""))
        if tag == "meta":
            self.metas.append(a)
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unexpected </{tag}> with open {self.stack[-3:]}")
        else:
            self.stack.pop()


def parse(path: Path) -> tuple[Page, str]:
    text = path.read_text(encoding="utf-8")
    page = Page()
    page.feed(text)
    page.close()
    assert not page.errors and not page.stack, (page.errors, page.stack)
    return page, text


def assert_self_contained(page: Page, text: str) -> None:
    assert "http://" not in text and "https://" not in text
    for url in page.urls:  # only inline data, in-page anchors and relative local files
        local = not url.startswith("//") and not re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", url)
        assert url.startswith(("data:image/png;base64,", "#")) or local, url[:80]
    assert page.imgs and all(src.startswith("data:image/png;base64,") for src in page.imgs)
    assert any(m.get("name") == "viewport" for m in page.metas)


def model_outputs(seed=0, n=120, k=4):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(0, 1, (n, k))
    logits[np.arange(n), y] += 2.0
    return y, logits * 2.5


@pytest.fixture
def run_dir(tmp_path):
    run = tmp_path / "run"
    (run / "plots").mkdir(parents=True)
    y, logits = model_outputs()
    probs = apply_temperature(logits, 1.0)
    counts = {s: dict.fromkeys(CLASSES, n) for s, n in (("train", 80), ("val", 10), ("test", 30))}
    (run / "model.json").write_text(json.dumps({
        "name": "brain <script>alert(1)</script>", "model": "resnet18", "classes": CLASSES,
        "preprocess": {"size": 224, "channels": 3, "fit": "pad"}, "recipe": {"name": "default", "prior": "train"},
        "class_bias": [0.25, -0.5, 0.0, 0.125],
        "versions": {"mediscan": "0.1.0", "torch": "2.4"}, "created": "2025-01-01T12:00:00",
        "params": 11178564, "train_seconds": 812.4,
        "data": {"root": "/data/brain", "counts": counts,
                 "skipped": [{"path": "bad/x.txt", "reason": "not an image"},
                             {"path": ".ipynb_checkpoints/a.jpg", "reason": "hidden"}]},
    }))
    test = metrics_with_ci(y, probs, CLASSES, n_resamples=100)
    test["selective"] = selective_prediction(probs, y, [0.0, 0.5, 0.9])
    test["worst_errors"] = [{"file": "glioma/g7.jpg", "true": "glioma",
                             "predicted": "notumor", "probability": 0.97}]
    (run / "metrics.json").write_text(json.dumps({
        "test": test,
        "val": metrics_with_ci(y[:40], probs[:40], CLASSES, n_resamples=50),
        "split": {"train": 320, "val": 40, "test": 120},
        "calibration": calibration_summary(logits, y, logits, y),
    }))
    with (run / "history.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"])
        for e in range(1, 6):
            w.writerow([e, 1 / e, 1 - 0.4 / e, 1.2 / e, 1 - 0.5 / e, 1e-3 / e, 10.5])
    accs = {n: [0.85, 0.8, 0.7, 0.6, 0.5] for n in list(CORRUPTIONS)[:3]}
    (run / "robustness.json").write_text(json.dumps(robustness_results(0.9, accs)))
    plots.plot_roc(y, probs, CLASSES, run / "plots" / "roc.png")
    imgs = [np.full((3, 16, 16), 40 * i, dtype=np.uint8) for i in range(4)]
    plots.plot_gallery(imgs, ["a", "b", "c", "d"], run / "plots" / "worst_errors.png", ncols=2)
    plots.plot_gallery(imgs[:1], ["cam"], run / "plots" / "cam_glioma_0.png")
    (run / "evaluations").mkdir()
    yb = np.array([0, 1] * 20)
    pb = np.clip(np.eye(2)[yb] * 0.7 + np.random.default_rng(1).uniform(0, 0.3, (40, 2)), 0, 1)
    (run / "evaluations" / "hospital_b.json").write_text(json.dumps({
        "name": "hospital B", "data": "/ext/yesno", "created": "2025-01-02",
        "mapping": {"glioma": "yes", "meningioma": "yes", "notumor": "no", "pituitary": "yes"},
        "metrics": metrics_with_ci(yb, pb, ["no", "yes"], n_resamples=50),
    }))
    plots.plot_roc(yb, pb, ["no", "yes"], run / "evaluations" / "hospital_b" / "roc.png")
    return run


def test_plot_functions_write_pngs(tmp_path):
    y, logits = model_outputs(1, 60)
    probs = apply_temperature(logits, 1.0)
    curve = reliability_curve(probs, y)
    rows = [{"epoch": "1", "train_loss": "1.0", "train_acc": "0.5", "val_loss": "1.1",
             "val_acc": "0.4", "lr": "0.001"}, {"epoch": "2", "train_loss": "0.5",
             "train_acc": "0.8", "val_loss": "", "val_acc": "0.7", "lr": "0.0005"}]
    made = [
        plots.plot_history(rows, tmp_path / "h.png"),
        plots.plot_confusion([[5, 1], [2, 7]], ["no", "yes"], tmp_path / "c.png"),
        plots.plot_confusion([[5, 1], [0, 0]], ["no", "yes"], tmp_path / "cn.png", normalized=True),
        plots.plot_roc(y, probs, CLASSES, tmp_path / "roc.png"),
        plots.plot_reliability(curve, tmp_path / "rel.png", after=curve),
        plots.plot_robustness(robustness_results(0.9, {"blur": [0.9, 0.8, 0.7, 0.6, 0.5]}),
                              tmp_path / "rob.png"),
        plots.plot_gallery([np.zeros((8, 8), np.uint8), np.zeros((8, 8, 3), np.uint8)],
                           ["grey", "rgb"], tmp_path / "g.png"),
        plots.plot_comparison([{"name": "a", "accuracy": {"value": 0.9, "ci": [0.85, 0.94]}},
                               {"name": "b", "accuracy": 0.8}], tmp_path / "sub" / "cmp.png"),
    ]
    for path in made:
        assert path.read_bytes()[:8] == PNG_MAGIC


def test_run_report_is_self_contained_and_complete(run_dir):
    out = render_run_report(run_dir)
    assert out == run_dir / "report.html"
    page, text = parse(out)
    assert_self_contained(page, text)
    for section in ("data", "training", "metrics", "per-class", "confusion", "roc", "calibration",
                    "robustness", "errors", "gradcam", "external", "model-card"):
        assert section in page.ids, section
    # missing standard plots were drawn from the JSON
    for name in ("history", "confusion", "confusion_normalized", "reliability", "robustness"):
        assert (run_dir / "plots" / f"{name}.png").is_file()
    assert "Not a medical device" in text and "not for diagnosis" in text.lower()
    assert "<script>" not in text and "&lt;script&gt;" in text  # autoescaped
    metrics = json.loads((run_dir / "metrics.json").read_text())
    acc = metrics["test"]["headline"]["accuracy"]
    assert f"{100 * acc['value']:.1f}%" in text
    assert f"{100 * acc['ci'][0]:.1f}–{100 * acc['ci'][1]:.1f}%" in text
    for cls in CLASSES:
        assert f"<td>{cls}</td>" in text
    assert "bad/x.txt" in text and "hospital B" in text and "Sensitivity (yes)" in text
    assert "glioma → yes" in text
    assert "glioma/g7.jpg" in text and "selective" in text  # worst errors, abstention table
    assert "Class shares assumed" in text and "the training split's class frequencies" in text
    assert f"{CLASSES[0]} +0.25, {CLASSES[1]} -0.50" in text
    # 7 standard plots + 1 Grad-CAM + the external evaluation's ROC
    assert len(page.imgs) == 9


def test_run_report_leaves_out_missing_pieces(tmp_path):
    run = tmp_path / "bare"
    run.mkdir()
    (run / "model.json").write_text(json.dumps({"name": "bare", "classes": ["a", "b"]}))
    page, text = parse(render_run_report(run))
    assert "http://" not in text and "https://" not in text
    assert {"data", "model-card"} <= page.ids
    assert not page.ids & {"training", "metrics", "robustness", "external", "gradcam", "roc"}
    assert "No external validation has been run." in text


def test_run_report_survives_broken_json(run_dir):
    (run_dir / "robustness.json").write_text("{not json")
    (run_dir / "plots" / "robustness.png").unlink(missing_ok=True)
    page, text = parse(render_run_report(run_dir))
    assert "robustness" not in page.ids
    assert "robustness.json could not be read" in text


def test_run_report_needs_a_run_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"neither model\.json nor metrics\.json"):
        render_run_report(tmp_path)


def test_comparison_report(tmp_path):
    cmp = tmp_path / "compare"
    (cmp / "resnet18").mkdir(parents=True)
    (cmp / "resnet18" / "report.html").write_text("<html></html>")
    y, logits = model_outputs(3, 100)
    preds = {"seed_cnn": (y + (np.arange(100) % 7 == 0)) % 4, "resnet18": y,
             "vgg16": logits.argmax(1)}
    rows = [{"name": name, "run": name, "accuracy": {"value": acc, "ci": [acc - 0.03, acc + 0.02]},
             "balanced_accuracy": {"value": acc, "ci": [acc - 0.04, acc + 0.02]},
             "macro_f1": acc - 0.01, "macro_auc": {"value": 0.99, "ci": [0.98, 1.0]}, "ece": 0.03,
             "params": 2104758, "train_seconds": 95.0, "images_per_second": 1234.5,
             "robustness_score": 0.81}
            for name, acc in (("seed_cnn", 0.86), ("resnet18", 0.97), ("vgg16", 0.93))]
    (cmp / "comparison.json").write_text(json.dumps({
        "data": "/data/brain", "seed": 0, "split": {"train": 400, "test": 100}, "rows": rows,
        "mcnemar": pairwise_mcnemar(y, preds)}))
    out = render_comparison_report(cmp)
    page, text = parse(out)
    assert_self_contained(page, text)
    assert (cmp / "plots" / "comparison.png").is_file()
    assert {"table", "mcnemar"} <= page.ids
    assert "resnet18/report.html" in page.urls  # relative link to a local report only
    assert "86.0%" in text and "2,104,758" in text and "Not a medical device" in text
