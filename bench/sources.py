"""The source benchmark: does a brain-MRI model detect the tumour, or the data set it was trained on?

    python bench/sources.py RUN [RUN2 ...] [--brats ../shared/datasets/brats18-multicontrast]

For each run, on the BraTS-2018 slices (skull-stripped gliomas of 20 patients, each slice in
four MRI contrasts; never trained on):

- tumour sensitivity per contrast (t1, t1ce, t2, flair): the share of tumour slices called any
  tumour class, on all 600 slices and on the 336 whose tumour covers >= 1,500 pixels;
- specificity per contrast on `tumour-free/` (slices of the same patients with no tumour label
  within +-3 slices: cerebellum and vertex, so a harder check than normal brains);
- AUROC of P(tumour) between the >= 1,500-pixel tumour slices and the tumour-free slices: how
  well the model separates them whatever the threshold;
- specificity on healthy twins (bench/healthy_mirror.py: each slice whose tumour lies wholly on one
  side of the midline, with that half replaced by the mirrored healthy half: mid-brain slices
  without a tumour), and the AUROC of P(tumour) between those tumour slices and their twins, a
  paired test of whether the model looks at the tumour; the same for patched twins (only the grown
  tumour replaced by the tissue at its mirror place: the rest keeps its natural asymmetry, which a
  perfectly symmetric twin lacks and a model comparing the hemispheres would be flattered by);
- the share of slices the run's out-of-distribution check flags as unlike its training images,
  and sensitivity and specificity on the slices it does not flag (what a user who heeds the flag
  is left with);
- Grad-CAM pointing: the share of >= 1,500-pixel slices (up to --cam-n per contrast) whose CAM
  peak (the tumour class with the highest probability) lies inside the expert tumour mask;
- the run's own held-out test accuracy (metrics.json) and, where the run folder holds an
  inspection (inspect.json's shortcut audit), its top finding.

Every proportion has a 95% Wilson interval. Prints the command, one table per run and a
summary row per run, then one JSON line (`--json`: the JSON line only).
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
from scipy.stats import binomtest
from sklearn.metrics import roc_auc_score

from bench_common import announce, emit, log, machine, table
from healthy_mirror import mirrored_twin, patched_twin, twin_plan

CONTRASTS = ("t1", "t1ce", "t2", "flair")
LARGE_TUMOUR = 1500  # pixels: the ">= 1,500-pixel slices"
DEFAULT_BRATS = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "brats18-multicontrast"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+", help="Run folders written by `mediscan train`.")
    parser.add_argument("--brats", type=Path, default=DEFAULT_BRATS, help="The BraTS slice folder.")
    parser.add_argument("--normal", default="notumor", help="The run's no-tumour class.")
    parser.add_argument("--cam-n", type=int, default=60,
                        help="Slices per contrast for the Grad-CAM pointing column (0: skip).")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", action="store_true", help="Print the JSON line only.")
    return parser.parse_args(argv)


def proportion(hits: int, n: int) -> dict:
    """{"value", "ci", "n"}: a proportion with its 95% Wilson interval."""
    if n == 0:
        return {"value": None, "ci": None, "n": 0}
    ci = binomtest(hits, n).proportion_ci(0.95, method="wilson")
    return {"value": hits / n, "ci": [float(ci.low), float(ci.high)], "n": n}


def tumour_pixels(brats: Path) -> dict[str, int]:
    """{file name: tumour pixels} from index.csv."""
    with open(brats / "index.csv", newline="") as handle:
        return {row["file"]: int(row["tumour_px"]) for row in csv.DictReader(handle)}


def tumour_probability(classifier, paths: list[Path], normal: str) -> tuple[np.ndarray, np.ndarray]:
    """P(any tumour class) for each file, through the run's own Classifier, and whether its
    out-of-distribution check flags the file (all False for a bundle without one)."""
    batch = classifier.predict_files(paths)
    if batch.failures:
        raise SystemExit(f"unreadable benchmark files: {[str(f.path) for f in batch.failures[:5]]}")
    return (np.array([1.0 - p.probabilities[normal] for p in batch.predictions]),
            np.array([bool(p.outside) for p in batch.predictions]))


def healthy_twins(brats: Path, names: list[str]) -> dict[str, tuple[str, int]]:
    """{slice: (tumour side, midline)} for the slices that get a healthy twin (the same in every contrast)."""
    from mediscan.data.readers import read_image

    brains = {n: np.logical_or.reduce([read_image(brats / c / n) > 0 for c in CONTRASTS]) for n in names}
    return twin_plan(brains, {n: read_image(brats / "mask" / n) for n in names})


def twin_columns(classifier, brats: Path, contrast: str, twins: dict[str, tuple[str, int]],
                 p_tumour: dict[str, float], normal: str) -> dict:
    """Specificity on the healthy twins of one contrast, whole and patched, and the AUROC of the tumour
    slices against each."""
    from mediscan.data.readers import read_image

    names = sorted(twins)
    makers = {"twin": lambda image, n: mirrored_twin(image, *twins[n]),
              "patch": lambda image, n: patched_twin(image, read_image(brats / "mask" / n), twins[n][1])}
    p_twin = {kind: [] for kind in makers}
    for start in range(0, len(names), 64):
        chunk = names[start:start + 64]
        slices = [read_image(brats / contrast / n) for n in chunk]
        for kind, make in makers.items():
            images = [make(image, n) for image, n in zip(slices, chunk)]
            p_twin[kind] += [1.0 - p.probabilities[normal] for p in classifier.predict_arrays(images, chunk)]
    paired = np.array([p_tumour[n] for n in names])
    labels = np.r_[np.ones(len(names)), np.zeros(len(names))]
    row = {}
    for kind, p in p_twin.items():
        p = np.array(p)
        row[f"specificity_{kind}"] = proportion(int((p < 0.5).sum()), len(names))
        row[f"auroc_tumour_vs_{kind}"] = float(roc_auc_score(labels, np.r_[paired, p])) if names else None
    return row


def cam_hit(classifier, path: Path, mask_path: Path, normal: str) -> bool:
    """Does the CAM of the most probable tumour class peak inside the tumour mask?"""
    from mediscan.data.readers import read_image
    from mediscan.explain import explain, view_point_to_image

    image = read_image(path)
    tumour_classes = [c for c in classifier.classes if c != normal]
    probs = classifier.predict_arrays([image], [str(path)])[0].probabilities
    target = max(tumour_classes, key=probs.get)
    cam, _ = explain(classifier, image, target=target)
    row, col = np.unravel_index(int(np.argmax(cam)), cam.shape)
    x, y = view_point_to_image(classifier.preprocess, image, (col + 0.5, row + 0.5))
    mask = read_image(mask_path)
    inside = 0 <= int(y) < mask.shape[0] and 0 <= int(x) < mask.shape[1]
    return bool(inside and mask[int(y), int(x)] > 0)


def score_contrast(classifier, brats: Path, contrast: str, pixels: dict[str, int], normal: str,
                   cam_n: int, twins: dict[str, tuple[str, int]]) -> dict:
    """Sensitivity (all, large), specificity (tumour-free slices, healthy twins) and CAM pointing for one
    contrast."""
    names = sorted(pixels)
    p_tumour, outside = tumour_probability(classifier, [brats / contrast / n for n in names], normal)
    called = p_tumour >= 0.5
    large = np.array([pixels[n] >= LARGE_TUMOUR for n in names])
    free = sorted((brats / "tumour-free" / contrast).glob("*.png"))
    p_free, free_outside = tumour_probability(classifier, free, normal)
    free_called = p_free >= 0.5
    auc = roc_auc_score(np.r_[np.ones(int(large.sum())), np.zeros(len(free))], np.r_[p_tumour[large], p_free])
    answered, free_answered = large & ~outside, ~free_outside
    row = {"sensitivity": proportion(int(called.sum()), len(names)),
           "sensitivity_large": proportion(int(called[large].sum()), int(large.sum())),
           "specificity": proportion(int((~free_called).sum()), len(free)),
           "auroc_large_vs_free": float(auc),
           "flagged": proportion(int(outside.sum() + free_outside.sum()), len(names) + len(free)),
           "sensitivity_large_unflagged": proportion(int(called[answered].sum()), int(answered.sum())),
           "specificity_unflagged": proportion(int((~free_called[free_answered]).sum()),
                                               int(free_answered.sum())),
           **twin_columns(classifier, brats, contrast, twins, dict(zip(names, p_tumour)), normal)}
    if cam_n:
        picked = [n for n, big in zip(names, large) if big][::max(1, int(large.sum()) // cam_n)][:cam_n]
        hits = sum(cam_hit(classifier, brats / contrast / n, brats / "mask" / n, normal) for n in picked)
        row["cam_pointing"] = proportion(hits, len(picked))
    return row


def own_test_accuracy(run: Path) -> dict | None:
    """The run's held-out test accuracy from metrics.json, if evaluated."""
    path = run / "metrics.json"
    if not path.exists():
        return None
    return json.loads(path.read_text()).get("test", {}).get("headline", {}).get("accuracy")


def top_shortcut(run: Path) -> str | None:
    """The shortcut audit's first finding, if the run folder holds an inspect.json."""
    path = run / "inspect.json"
    if not path.exists():
        return None
    findings = json.loads(path.read_text()).get("shortcuts", {}).get("findings", [])
    return findings[0].get("sentence") if findings else "none flagged"


def score_run(run: Path, args: argparse.Namespace, twins: dict[str, tuple[str, int]]) -> dict:
    """Every column for one run."""
    from mediscan.predict import Classifier

    classifier = Classifier.load(run, device=args.device)
    if args.normal not in classifier.classes:
        raise SystemExit(f"{run}: no class {args.normal!r} (classes {classifier.classes}); pass --normal")
    pixels = tumour_pixels(args.brats)
    contrasts = {}
    for contrast in CONTRASTS:
        log(f"{run.name}: {contrast}")
        contrasts[contrast] = score_contrast(classifier, args.brats, contrast, pixels, args.normal,
                                             args.cam_n, twins)
    return {"run": str(run), "test_accuracy": own_test_accuracy(run), "contrasts": contrasts,
            "top_shortcut": top_shortcut(run), "recipe": classifier.meta.get("recipe", {}).get("name")}


def pct(entry: dict | None) -> str:
    """'93.1 (90.2-95.2)' from a proportion, '-' when missing."""
    if not entry or entry.get("value") is None:
        return "-"
    return f"{100 * entry['value']:.1f} ({100 * entry['ci'][0]:.1f}-{100 * entry['ci'][1]:.1f})"


def auroc(value: float | None) -> str:
    """'0.731', '-' when there was nothing to compare."""
    return "-" if value is None else f"{value:.3f}"


def run_table(result: dict) -> str:
    """One row per contrast."""
    rows = [[c, pct(r["sensitivity"]), pct(r["sensitivity_large"]), pct(r["specificity"]),
             auroc(r["auroc_large_vs_free"]), pct(r["flagged"]), pct(r["sensitivity_large_unflagged"]),
             pct(r["specificity_unflagged"]), pct(r["specificity_twin"]), auroc(r["auroc_tumour_vs_twin"]),
             pct(r["specificity_patch"]), auroc(r["auroc_tumour_vs_patch"]), pct(r.get("cam_pointing"))]
            for c, r in result["contrasts"].items()]
    columns = ["contrast", "sensitivity % (all 600)", f"sensitivity % (>= {LARGE_TUMOUR} px)",
               "specificity % (tumour-free)", "AUROC (large vs free)", "flagged unfamiliar %",
               "sensitivity % (large, unflagged)", "specificity % (unflagged)", "specificity % (healthy twin)",
               "AUROC (tumour vs twin)", "specificity % (patched twin)", "AUROC (tumour vs patch)",
               "CAM peak in tumour %"]
    return table(columns, rows)


def summary_row(result: dict) -> list[str]:
    """Worst contrast's large-tumour sensitivity and specificity beside the own test accuracy."""
    rows = result["contrasts"].values()
    worst_sens = min(r["sensitivity_large"]["value"] for r in rows)
    worst_spec = min(r["specificity"]["value"] for r in rows)
    acc = result["test_accuracy"]

    def worst(key: str) -> str:
        values = [r[key]["value"] for r in rows if r[key]["n"]]
        return f"{100 * min(values):.1f}" if values else "-"

    return [Path(result["run"]).name, "-" if not acc else f"{100 * acc['value']:.1f}",
            f"{100 * worst_sens:.1f}", f"{100 * worst_spec:.1f}", worst("specificity_twin"),
            worst("specificity_patch"), result["top_shortcut"] or "-"]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    command = announce(args.json)
    twins = healthy_twins(args.brats, sorted(tumour_pixels(args.brats)))
    results = [score_run(run, args, twins) for run in args.runs]
    text = "\n\n".join(f"{Path(r['run']).name} (recipe {r['recipe']})\n{run_table(r)}" for r in results)
    summary = table(["run", "own test acc %", f"worst sens % (>= {LARGE_TUMOUR} px)", "worst spec %",
                     "worst twin spec %", "worst patched twin spec %", "top shortcut"],
                    [summary_row(r) for r in results])
    emit({"command": command, "machine": machine(), "runs": results}, json_only=args.json,
         text=f"{text}\n\n{summary}")


if __name__ == "__main__":
    main()
