"""Figures for reports: each function takes plain results (dicts, arrays), writes one PNG and
returns its path. Figures are built with matplotlib's object API (`Figure`, no pyplot), so
nothing opens a window, no global state is touched and it is safe in threads.

Standard file names in a run's `plots/` folder (the HTML report looks for these):
history.png, confusion.png, confusion_normalized.png, roc.png, reliability.png,
robustness.png, worst_errors.png, cam_*.png; comparison.png for compare.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from sklearn.metrics import roc_auc_score, roc_curve

from mediscan.files import atomic_path

DPI = 110


def _figure(nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float], **kw):
    """A stand-alone figure and its axes, like `plt.subplots` without pyplot."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, **kw)


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=DPI, bbox_inches="tight", format="png")
    return path


def _column(rows: Sequence[Mapping], key: str) -> np.ndarray:
    """Column of history rows as floats (CSV strings welcome); NaN where missing or empty."""
    out = []
    for r in rows:
        v = r.get(key)
        try:
            out.append(float(v) if v not in (None, "") else np.nan)
        except (TypeError, ValueError):
            out.append(np.nan)
    return np.asarray(out, dtype=np.float64)


def plot_history(history_rows: Sequence[Mapping], path: str | Path) -> Path:
    """Loss and accuracy (train vs val) and learning rate per epoch, from history.csv rows."""
    epochs = _column(history_rows, "epoch")
    if np.isnan(epochs).all():
        epochs = np.arange(1, len(history_rows) + 1, dtype=np.float64)
    panels = [("loss", "Loss"), ("acc", "Accuracy")]
    has_lr = not np.isnan(_column(history_rows, "lr")).all()
    fig, axes = _figure(1, 2 + has_lr, figsize=(4.2 * (2 + has_lr), 3.4))
    for ax, (key, title) in zip(axes, panels):
        for split, style in (("train", "-o"), ("val", "-s")):
            y = _column(history_rows, f"{split}_{key}")
            if not np.isnan(y).all():
                ax.plot(epochs, y, style, ms=3, label=split)
        ax.set(title=title, xlabel="epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    if has_lr:
        axes[2].plot(epochs, _column(history_rows, "lr"), "-", color="tab:green")
        axes[2].set(title="Learning rate", xlabel="epoch")
        axes[2].ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        axes[2].grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def plot_confusion(cm, classes: Sequence[str], path: str | Path, normalized: bool = False) -> Path:
    """Confusion matrix heatmap: counts, or row-normalised with percentage and count per cell."""
    counts = np.asarray(cm, dtype=np.float64)
    rows = counts.sum(axis=1, keepdims=True)
    frac = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    k = len(classes)
    size = max(3.8, 0.9 * k + 2)
    fig, ax = _figure(figsize=(size, size * 0.9))
    shown = frac if normalized else counts
    im = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalized else max(1, counts.max()))
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    for i in range(k):
        for j in range(k):
            text = f"{100 * frac[i, j]:.1f}%\n({int(counts[i, j])})" if normalized \
                else f"{int(counts[i, j])}"
            dark = (frac[i, j] if normalized else counts[i, j] / max(1, counts.max())) > 0.5
            ax.text(j, i, text, ha="center", va="center", fontsize=8 if normalized else 9,
                    color="white" if dark else "black")
    ax.set_xticks(range(k), classes, rotation=35, ha="right")
    ax.set_yticks(range(k), classes)
    ax.set(xlabel="predicted", ylabel="true",
           title="Confusion matrix (row %)" if normalized else "Confusion matrix (counts)")
    fig.tight_layout()
    return _save(fig, path)


def plot_roc(y_true, probs, classes: Sequence[str], path: str | Path) -> Path:
    """One-vs-rest ROC curve per class (`sklearn.metrics.roc_curve`) with its AUC."""
    y = np.asarray(y_true)
    p = np.asarray(probs, dtype=np.float64)
    fig, ax = _figure(figsize=(4.8, 4.4))
    for k, name in enumerate(classes):
        positive = y == k
        if positive.all() or not positive.any():
            continue
        fpr, tpr, _ = roc_curve(positive, p[:, k])
        auc = roc_auc_score(positive, p[:, k])
        ax.plot(fpr, tpr, lw=1.6, label=f"{name} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=1)
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="1 - specificity (FPR)",
           ylabel="sensitivity (TPR)", title="ROC, one-vs-rest")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def _bars(ax: Axes, curve: Mapping, label: str, color: str, offset: float) -> None:
    centers = np.asarray(curve["bin_centers"])
    width = 1.0 / curve["n_bins"]
    acc = np.asarray([np.nan if a is None else a for a in curve["accuracy"]])
    ax.bar(centers + offset * width, np.nan_to_num(acc), width=width * 0.45, color=color,
           alpha=0.8, label=f"{label} (ECE {curve['ece']:.3f})")


def plot_reliability(curve: Mapping, path: str | Path, *, after: Mapping | None = None) -> Path:
    """Reliability diagram (accuracy per confidence bin vs the diagonal) and bin counts;
    `after` adds the curve after temperature scaling."""
    fig, (ax, axc) = _figure(2, 1, figsize=(4.8, 5.4), height_ratios=[3, 1], sharex=True)
    _bars(ax, curve, "before" if after else "model", "tab:orange", -0.25 if after else 0)
    if after:
        _bars(ax, after, "after temperature", "tab:blue", 0.25)
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=1, label="perfect calibration")
    ax.set(ylim=(0, 1), ylabel="accuracy", title="Reliability (top label)")
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    width = 1.0 / curve["n_bins"]
    axc.bar(curve["bin_centers"], curve["counts"], width=width * 0.9, color="grey")
    axc.set(xlim=(0, 1), xlabel="confidence", ylabel="count")
    axc.set_yscale("symlog")
    fig.tight_layout()
    return _save(fig, path)


def plot_robustness(results: Mapping, path: str | Path) -> Path:
    """Accuracy vs severity for each corruption (robustness.json), clean accuracy dashed."""
    corruptions = results["corruptions"]
    fig, ax = _figure(figsize=(7.2, 4.4))
    clean = results.get("clean_accuracy")
    cmap = colormaps["tab10"]
    styles, markers = ("-", "--", ":"), "osD^v<>"
    for i, (name, entry) in enumerate(corruptions.items()):
        acc = entry["accuracy"] if isinstance(entry, Mapping) else entry
        sev = list(range(1, len(acc) + 1))
        xs, ys = ([0, *sev], [clean, *acc]) if clean is not None else (sev, acc)
        ax.plot(xs, ys, ls=styles[(i // 10) % 3], marker=markers[i % 7], ms=3, lw=1.3,
                color=cmap(i % 10), label=name)
    if clean is not None:
        ax.axhline(clean, ls="--", color="black", lw=1, label=f"clean {clean:.3f}")
    title = "Accuracy under corruption"
    if results.get("score") is not None:
        title += f" (robustness score {results['score']:.3f})"
    ax.set(xlabel="severity", ylabel="accuracy", title=title, ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    return _save(fig, path)


def _as_hwc(img) -> np.ndarray:
    """uint8/float image HxW, HxWxC or CxHxW -> HxW or HxWx3 for imshow."""
    a = np.asarray(img.detach().cpu() if hasattr(img, "detach") else img)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = np.moveaxis(a, 0, -1)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    return a


def plot_gallery(images: Sequence, titles: Sequence[str], path: str | Path, ncols: int = 4) -> Path:
    """Grid of images with titles (worst errors, Grad-CAM overlays)."""
    n = max(1, len(images))
    ncols = max(1, min(ncols, n))
    nrows = int(np.ceil(n / ncols))
    fig, axes = _figure(nrows, ncols, figsize=(2.6 * ncols, 2.8 * nrows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, img, title in zip(axes.ravel(), images, list(titles) + [""] * n):
        a = _as_hwc(img)
        ax.imshow(a, cmap="gray" if a.ndim == 2 else None,
                  vmin=0, vmax=255 if a.dtype == np.uint8 else None)
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def _value_ci(v) -> tuple[float, list[float] | None]:
    if isinstance(v, Mapping):
        return float(v["value"]) if v.get("value") is not None else np.nan, v.get("ci")
    return (np.nan if v is None else float(v)), None


def plot_comparison(rows: Sequence[Mapping], path: str | Path, *, metric: str = "accuracy") -> Path:
    """Bar chart of one metric per model with CI whiskers; row[metric] is a number or
    {"value", "ci": [lo, hi]}."""
    names = [str(r["name"]) for r in rows]
    vals, errs = [], [[], []]
    for r in rows:
        v, ci = _value_ci(r.get(metric))
        vals.append(v)
        errs[0].append(v - ci[0] if ci else 0.0)
        errs[1].append(ci[1] - v if ci else 0.0)
    fig, ax = _figure(figsize=(max(4.5, 0.9 * len(rows) + 2), 3.8))
    ax.bar(range(len(rows)), vals, yerr=np.asarray(errs), capsize=4, color="tab:blue", alpha=0.85)
    finite = [v for v in vals if np.isfinite(v)]
    bottom = 0.0
    if finite and all(0 <= v <= 1 for v in finite):
        lows = [v - e for v, e in zip(vals, errs[0]) if np.isfinite(v)]
        bottom = max(0.0, np.floor((min(lows) - 0.05) * 10) / 10)
        ax.set_ylim(bottom, 1.0)
    for i, v in enumerate(vals):
        if np.isfinite(v):
            ax.text(i, bottom, f"{v:.3f}", ha="center", va="bottom", color="white", fontsize=8)
    ax.set_xticks(range(len(rows)), names, rotation=30, ha="right")
    ax.set(ylabel=metric.replace("_", " "), title=f"{metric.replace('_', ' ')} with 95% CI")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)
