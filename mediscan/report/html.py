"""Self-contained HTML reports (one file, images inlined, no external requests, phone-readable).

`render_run_report(run_dir)` -> run_dir/report.html and `render_comparison_report(dir)` ->
dir/report.html. Every input below is optional except that a run needs model.json or
metrics.json; what is missing is left out. Missing standard plots are drawn from the JSON.

The files a run folder may hold, and their shapes (the one place they are defined):

model.json::

    {"name": "resnet18-brain", "model": "resnet18", "classes": ["glioma", ...],
     "preprocess": {...Preprocess.to_dict()}, "recipe": {"name": "default", ...},
     "preprocess_reasons": ["grey: mean chroma 0.0 < 4 ...", ...],   # when chosen from the data
     "characterisation": {...characterise.Characterisation.to_dict()},  # ditto
     "versions": {"mediscan": "0.1.0", "torch": "2.4", ...}, "created": "2025-01-01T12:00:00",
     "params": 11178564, "train_seconds": 812.4, "temperature": 1.3,   # temperature optional
     "data": {"root": "/data/Training",
              "counts": {"train": {"glioma": 1057, ...}, "val": {...}, "test": {...}},
              "skipped": [{"path": "x.txt", "reason": "not an image"}]}}

metrics.json::

    {"test": <stats.metrics_with_ci output>,          # see mediscan/evaluation/stats.py
             # optional extras inside "test":
             #   "selective": <calibration.selective_prediction output>,
             #   "abstain": <calibration.abstain_summary output>,   # evaluate --abstain-below
             #   "ood": {"threshold", "n", "n_outside", "fraction_outside", "accuracy_inside"},
             #   "worst_errors": [{"file", "true", "predicted", "probability", "uncertain", "outside"}, ...]
             #   "worst_errors": [{"file", "true", "predicted", "probability", "uncertain"}, ...]
             #   "quadratic_kappa": 0.71, and headline["quadratic_kappa"]  # ordinal recipes
     "val": <classification_metrics or metrics_with_ci output>,   # optional
     "split": {"train": 4571, "val": 571, "test": 572},        # sizes (or any small dict)
     "calibration": <calibration.calibration_summary output>}  # optional
     ("selective" is also accepted at the top level)

history.csv: columns epoch, train_loss, train_acc, val_loss, val_acc, lr, seconds.
split.json: {"train": [keys...], "val": [...], "test": [...]} (sizes shown when no counts).
robustness.json: <robustness.robustness_results output>.
evaluations/<name>.json (external data)::

    {"name": "hospital-b", "data": "/data/other", "created": "...",
     "mapping": {"glioma": "yes", ..., "notumor": "no"},      # optional
     "metrics": <metrics_with_ci output over the data's classes, + "selective"/"abstain"/"worst_errors">,
     "skipped": [{"path", "reason"}]}                          # optional
evaluations/<name>/*.png: that evaluation's confusion_normalized.png, roc.png, worst_errors.png.

plots/: history.png, confusion.png, confusion_normalized.png, roc.png, reliability.png,
robustness.png, worst_errors.png, cam_*.png; other PNGs go under "More figures".

A comparison folder holds comparison.json (and plots/comparison.png)::

    {"data": "/data/Training", "seed": 0, "created": "...",
     "split": {"train": 4571, "val": 571, "test": 572},
     "rows": [{"name": "resnet18", "run": "resnet18",            # run: sub-folder, optional
               "accuracy": {"value", "ci"}, "balanced_accuracy": {...}, "macro_f1": {...},
               "macro_auc": {...}, "ece": 0.02, "params": 11178564, "train_seconds": 812.4,
               "images_per_second": 950.0, "robustness_score": 0.87}, ...],
     "mcnemar": [<stats.pairwise_mcnemar rows: model_a, model_b, b, c, statistic, p_value>]}
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape

from mediscan.files import read_json, write_atomic
from mediscan.report import plots
from mediscan.run_folder import RunFolder

TEMPLATES = Path(__file__).parent / "templates"
STANDARD_PLOTS = ("history", "confusion", "confusion_normalized", "roc", "reliability",
                  "robustness", "worst_errors")
HEADLINE_LABELS = {
    "accuracy": "Accuracy", "balanced_accuracy": "Balanced accuracy", "macro_f1": "Macro F1",
    "macro_auc": "Macro ROC AUC (one-vs-rest)", "sensitivity": "Sensitivity",
    "specificity": "Specificity", "quadratic_kappa": "Quadratic-weighted kappa (ordinal grades)",
}
MAX_SKIPPED_SHOWN = 50


# ------------------------------------------------------------------- formatting filters
def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def fmt_pct(v: Any, digits: int = 1) -> str:
    """0.9734 -> '97.3%'; anything not a number -> '–'."""
    return f"{100 * v:.{digits}f}%" if _finite(v) else "–"


def fmt_num(v: Any, digits: int = 3) -> str:
    """A number with `digits` decimals (integers as they are, with thousands separators)."""
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return f"{v:.{digits}f}" if _finite(v) else "–"


def fmt_ci(ci: Any, digits: int = 1) -> str:
    """[0.95, 0.98] -> '95.0–98.0%'."""
    if not ci or not all(_finite(x) for x in ci):
        return ""
    return f"{100 * ci[0]:.{digits}f}–{100 * ci[1]:.{digits}f}%"


def fmt_ci_num(ci: Any, digits: int = 3) -> str:
    """[0.951, 0.982] -> '0.951–0.982' (for AUC)."""
    if not ci or not all(_finite(x) for x in ci):
        return ""
    return f"{ci[0]:.{digits}f}–{ci[1]:.{digits}f}"


def fmt_cell(v: Any) -> str:
    """A CSV cell: numbers to 4 significant digits, text as it is."""
    try:
        return f"{float(v):.4g}"
    except (TypeError, ValueError):
        return str(v)


def fmt_p(v: Any) -> str:
    """p-value: '<0.001' or three decimals."""
    if not _finite(v):
        return "–"
    return "<0.001" if v < 0.001 else f"{v:.3f}"


def fmt_seconds(v: Any) -> str:
    """812.4 -> '13 min 32 s'."""
    if not _finite(v):
        return "–"
    m, s = divmod(round(v), 60)
    h, m = divmod(m, 60)
    return f"{h} h {m} min" if h else (f"{m} min {s} s" if m else f"{v:.1f} s")


def _environment() -> Environment:
    env = Environment(loader=FileSystemLoader(TEMPLATES),
                      autoescape=select_autoescape(["html"]), trim_blocks=True,
                      lstrip_blocks=True)
    env.filters.update(pct=fmt_pct, num=fmt_num, ci=fmt_ci, ci_num=fmt_ci_num, cell=fmt_cell,
                       pvalue=fmt_p, duration=fmt_seconds)
    env.globals["HEADLINE_LABELS"] = HEADLINE_LABELS
    return env


# ------------------------------------------------------------------------ reading
def data_uri(path: Path) -> str:
    """A PNG file as a base64 data URI, so the page needs no other file."""
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _read_json(path: Path, problems: list[str]) -> Any:
    if not path.is_file():
        return None
    try:
        return read_json(path, fix="re-run the command that wrote it")
    except (OSError, ValueError) as exc:
        problems.append(f"{path.name} could not be read ({exc}); its section is left out.")
        return None


def headline_rows(metrics: Mapping | None) -> list[dict]:
    """[{key, label, value, ci}] from a metrics_with_ci dict (or plain classification_metrics)."""
    if not metrics:
        return []
    if "headline" in metrics:
        items = metrics["headline"].items()
    else:
        items = ((k, {"value": metrics.get(k), "ci": None}) for k in
                 ("accuracy", "balanced_accuracy", "macro_f1", "macro_auc"))
    rows = []
    for key, entry in items:
        label = HEADLINE_LABELS.get(key, key.replace("_", " ").capitalize())
        if key in ("sensitivity", "specificity") and "binary" in metrics:
            label += f" ({metrics['binary']['positive']})"
        value, ci = entry.get("value"), entry.get("ci")
        plain = "auc" in key or "kappa" in key  # not a proportion: shown as a number
        rows.append({"key": key, "label": label, "value": value, "ci": ci,
                     "text": fmt_num(value) if plain else fmt_pct(value),
                     "ci_text": fmt_ci_num(ci) if plain else fmt_ci(ci)})
    return rows


def split_counts(model: Mapping | None, metrics: Mapping | None, split: Any) -> dict:
    """{"classes": [...], "rows": [{"split", "counts": [...], "total"}]} for the data table."""
    counts = ((model or {}).get("data") or {}).get("counts") or {}
    classes = list((model or {}).get("classes") or [])
    if counts and all(isinstance(v, Mapping) for v in counts.values()):
        for per_class in counts.values():
            classes += [c for c in per_class if c not in classes]
        rows = [{"split": s, "counts": [per_class.get(c, 0) for c in classes],
                 "total": sum(per_class.values())} for s, per_class in counts.items()]
        return {"classes": classes, "rows": rows}
    if counts:  # flat {class: n}
        classes = list(counts)
        return {"classes": classes,
                "rows": [{"split": "all", "counts": [counts[c] for c in classes],
                          "total": sum(counts.values())}]}
    sizes = (metrics or {}).get("split") or {}
    if not sizes and isinstance(split, Mapping):
        sizes = {k: len(v) for k, v in split.items() if isinstance(v, list)}
    rows = [{"split": s, "counts": [], "total": n} for s, n in sizes.items() if _finite(n)]
    return {"classes": [], "rows": rows}


def _ensure_plots(run_dir: Path, history: list[dict], metrics: Mapping | None,
                  robustness: Mapping | None) -> None:
    """Draw the standard plots that are missing but whose data is in the run folder."""
    pdir = RunFolder(run_dir).plots
    test = (metrics or {}).get("test") or {}
    if history and not (pdir / "history.png").exists():
        plots.plot_history(history, pdir / "history.png")
    if test.get("confusion_matrix") and not (pdir / "confusion.png").exists():
        plots.plot_confusion(test["confusion_matrix"], test["classes"], pdir / "confusion.png")
        plots.plot_confusion(test["confusion_matrix"], test["classes"],
                             pdir / "confusion_normalized.png", normalized=True)
    cal = (metrics or {}).get("calibration") or {}
    if cal.get("reliability_before") and not (pdir / "reliability.png").exists():
        plots.plot_reliability(cal["reliability_before"], pdir / "reliability.png",
                               after=cal.get("reliability_after"))
    if robustness and robustness.get("corruptions") and not (pdir / "robustness.png").exists():
        plots.plot_robustness(robustness, pdir / "robustness.png")


def _images(run_dir: Path) -> dict[str, Any]:
    """Inline the PNGs of plots/: standard ones by name, Grad-CAM and the rest as lists."""
    pdir = RunFolder(run_dir).plots
    pngs = sorted(pdir.glob("*.png")) if pdir.is_dir() else []
    by_stem = {p.stem: p for p in pngs}
    return {
        "plots": {k: data_uri(by_stem[k]) for k in STANDARD_PLOTS if k in by_stem},
        "cams": [{"title": p.stem.removeprefix("cam_").replace("_", " "), "src": data_uri(p)}
                 for p in pngs if p.stem.startswith("cam_")],
        "other": [{"title": p.stem.replace("_", " "), "src": data_uri(p)} for p in pngs
                  if p.stem not in STANDARD_PLOTS and not p.stem.startswith("cam_")],
    }


def _evaluations(run_dir: Path, problems: list[str]) -> list[dict]:
    """External evaluations from evaluations/*.json, normalised to {name, ..., metrics}."""
    edir = RunFolder(run_dir).evaluations
    out = []
    for path in sorted(edir.glob("*.json")) if edir.is_dir() else []:
        doc = _read_json(path, problems)
        if not isinstance(doc, Mapping):
            continue
        metrics = doc.get("metrics") if "metrics" in doc else doc
        if not isinstance(metrics, Mapping) or "accuracy" not in metrics:
            problems.append(f"{path.name} holds no metrics; left out.")
            continue
        pdir = edir / path.stem
        figures = {k: data_uri(pdir / f"{k}.png") for k in ("confusion_normalized", "roc",
                                                              "worst_errors")
                   if (pdir / f"{k}.png").is_file()}
        out.append({"name": doc.get("name") or path.stem, "data": doc.get("data"),
                    "created": doc.get("created"), "mapping": doc.get("mapping"),
                    "skipped": doc.get("skipped") or [], "metrics": metrics,
                    "headline": headline_rows(metrics), "plots": figures, "seen": doc.get("seen"),
                    "unseen_headline": headline_rows(doc.get("unseen_metrics"))})
    return out


def _limits(model: Mapping | None, test: Mapping | None, robustness: Mapping | None,
            calibration: Mapping | None, evaluations: list[dict]) -> list[str]:
    """Plain-language limits for the model card, derived from the numbers."""
    limits = [
        ("Trained and tested on images from the data set named above only; accuracy on other "
         "scanners, hospitals, protocols or populations is unknown unless shown under "
         "External evaluations."),
        ("The test split comes from the same source as the training data, so it measures "
         "in-distribution performance."),
    ]
    if test:
        n = test.get("n", 0)
        acc = (test.get("headline") or {}).get("accuracy") or {}
        if acc.get("ci"):
            limits.append(f"With {n} test images the 95% interval of accuracy spans "
                          f"{fmt_ci(acc['ci'])}; smaller differences are not resolved.")
        supports = {c: v.get("support", 0) for c, v in (test.get("per_class") or {}).items()}
        if supports and min(supports.values()) < 30:
            few = ", ".join(f"{c} ({s})" for c, s in supports.items() if s < 30)
            limits.append(f"Few test images for: {few}; their per-class figures are uncertain.")
        worst = min(((c, v.get("sensitivity")) for c, v in (test.get("per_class") or {}).items()
                     if _finite(v.get("sensitivity"))), key=lambda t: t[1], default=None)
        if worst:
            limits.append(f"Lowest sensitivity: {worst[0]} at {fmt_pct(worst[1])}.")
    if robustness and robustness.get("corruptions"):
        drops = {name: min(e["accuracy"]) for name, e in robustness["corruptions"].items()
                 if e.get("accuracy")}
        if drops:
            name = min(drops, key=drops.get)
            limits.append(f"Most sensitive to {name.replace('_', ' ')}: accuracy falls to "
                          f"{fmt_pct(drops[name])} at the highest severity.")
    if calibration and _finite(calibration.get("ece_after")):
        limits.append(f"Confidence is approximate: expected calibration error "
                      f"{fmt_num(calibration['ece_after'])} after temperature scaling.")
    if not evaluations:
        limits.append("No external validation has been run.")
    return limits


def render_run_report(run_dir: str | Path) -> Path:
    """Write run_dir/report.html from whatever of the run folder's files exist."""
    run_dir, run = Path(run_dir), RunFolder(run_dir)
    problems: list[str] = []
    model = _read_json(run.meta_file, problems)
    metrics = _read_json(run.metrics_file, problems)
    if model is None and metrics is None:
        raise FileNotFoundError(f"{run_dir} holds neither model.json nor metrics.json; "
                                "is it a run folder written by `mediscan train`?")
    robustness = _read_json(run.robustness_file, problems)
    split = _read_json(run.split_file, problems)
    history = run.read_history()
    _ensure_plots(run_dir, history, metrics, robustness)
    test = (metrics or {}).get("test")
    calibration = (metrics or {}).get("calibration")
    evaluations = _evaluations(run_dir, problems)
    data = (model or {}).get("data") or {}
    context = {
        "title": (model or {}).get("name") or run_dir.name,
        "model": model or {},
        "metrics": metrics or {},
        "test": test,
        "val": (metrics or {}).get("val"),
        "headline": headline_rows(test),
        "val_headline": headline_rows((metrics or {}).get("val")),
        "counts": split_counts(model, metrics, split),
        "skipped": (data.get("skipped") or [])[:MAX_SKIPPED_SHOWN],
        "n_skipped": len(data.get("skipped") or []),
        "history": history,
        "calibration": calibration,
        "selective": (metrics or {}).get("selective") or (test or {}).get("selective"),
        "abstain": (test or {}).get("abstain"),
        "worst_errors": (test or {}).get("worst_errors") or [],
        "robustness": robustness,
        "evaluations": evaluations,
        "localisation": _read_json(run.localisation_file, problems),
        "limits": _limits(model, test, robustness, calibration, evaluations),
        "problems": problems,
        **_images(run_dir),
    }
    html = _environment().get_template("run_report.html").render(**context)
    return write_atomic(run.report_file, html)


def render_comparison_report(compare_dir: str | Path) -> Path:
    """Write compare_dir/report.html: the table of models, bar chart and McNemar p-values."""
    compare_dir = Path(compare_dir)
    problems: list[str] = []
    doc = _read_json(compare_dir / "comparison.json", problems)
    if not isinstance(doc, Mapping) or not doc.get("rows"):
        raise FileNotFoundError(f"{compare_dir / 'comparison.json'} is missing or has no rows; "
                                "run `mediscan compare` first")
    rows = list(doc["rows"])
    chart = compare_dir / "plots" / "comparison.png"
    if not chart.exists():
        plots.plot_comparison(rows, chart, metric="accuracy")
    for row in rows:
        run = row.get("run")
        has_report = bool(run) and RunFolder(compare_dir / run).report_file.is_file()
        row["link"] = f"{run}/report.html" if has_report else None
    names = [r["name"] for r in rows]
    pvalues = {(m["model_a"], m["model_b"]): m for m in doc.get("mcnemar") or []}
    matrix = [[pvalues.get((a, b)) or pvalues.get((b, a)) if a != b else None for b in names]
              for a in names]
    context = {
        "title": doc.get("title") or f"Model comparison: {compare_dir.name}",
        "doc": doc, "rows": rows, "names": names, "mcnemar_matrix": matrix,
        "chart": data_uri(chart), "problems": problems,
        "images": [{"title": p.stem.replace("_", " "), "src": data_uri(p)}
                   for p in sorted((compare_dir / "plots").glob("*.png")) if p != chart],
    }
    html = _environment().get_template("comparison_report.html").render(**context)
    return write_atomic(compare_dir / "report.html", html)
