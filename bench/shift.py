"""The issue-7 shift benchmark: tumour sensitivity and specificity, clean vs stand-ins for an unseen source.

    python bench/shift.py RUN --phantom
    python bench/shift.py RUN --ablation RUN2,RUN3 --phantom     # one summary row per run

Sets, all written to a temporary folder with the run's class folders:

- clean: the run's own held-out test split as it is (split.json; data from model.json
  `data.root`, or --data);
- reframed: the same images re-framed as another hospital's files look: a contrast/gamma change,
  random black margins to an aspect ratio of 0.7-1.4, the resolution taken down to as little as
  150 px wide and back up, a burned-in letter, saved as L, RGB, P (palette) or RGBA, PNG or JPEG;
- with --phantom: a fresh phantom set in the training style and one in the shifted style
  (T2-like contrast, wide margins, non-square canvas, burned-in letter), `--n` images each.
  Meaningful for phantom-trained runs (the demo); for real data it is a far-away probe.

Each run is scored with `mediscan.evaluation.runner.evaluate_external` (results also land in
RUN/evaluations/shift-*.json and the run's report). Four tumour classes with one "no tumour"
class are mapped to tumour / no (`--map 'glioma,meningioma,pituitary=tumor' --map 'notumor=no'`)
for sensitivity and specificity with 95% bootstrap CIs; the unmapped evaluation gives accuracy.
Prints the command, a table per set, one summary row per run (sensitivity drop in points) and a
JSON line (`--json`: the JSON line only).
"""

from __future__ import annotations

import argparse
import os
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from bench_common import announce, emit, fmt, fmt_ci, log, machine, scratch_dir, table

LETTERS = "abcdABCDLR"
MODES = ("L", "RGB", "P", "RGBA")
POSITIVE, NEGATIVE = "tumor", "no"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="Run folder written by `mediscan train`.")
    parser.add_argument("--data", type=Path, default=None,
                        help="The run's data folder, if it moved (default: model.json data.root).")
    parser.add_argument("--phantom", action="store_true", help="Add phantom sets, clean and shifted.")
    parser.add_argument("--n", type=int, default=200, help="Images per phantom set.")
    parser.add_argument("--phantom-size", type=int, default=128, help="Phantom side in pixels.")
    parser.add_argument("--seed", type=int, default=1,
                        help="Seed of the re-framing and the phantoms (the demo trains on seed 0).")
    parser.add_argument("--ablation", default="", help="More runs, comma-separated, one row each.")
    parser.add_argument("--resamples", type=int, default=1000, help="Bootstrap resamples for CIs.")
    parser.add_argument("--device", default=None)
    parser.add_argument("--dir", type=Path, default=None, help="Where the temporary folder goes.")
    parser.add_argument("--keep", action="store_true", help="Keep the generated sets.")
    parser.add_argument("--json", action="store_true", help="Print the JSON line only.")
    return parser.parse_args(argv)


# --------------------------------------------------------------------------- the clean split
def test_split(run: Path, data: Path | None):
    """(folder, test indices) of the run's held-out test split."""
    from mediscan.data.folders import scan_folder
    from mediscan.run_folder import RunFolder

    root = Path(data or RunFolder(run).read_meta()["data"]["root"])
    if not root.exists():
        raise SystemExit(f"{run}: its data {root} is not here; pass --data DIR")
    folder = scan_folder(root)
    return folder, np.sort(RunFolder(run).read_split().indices(folder)["test"])


def file_name(key: str) -> str:
    """A flat file name for a sample key ('a/b.png#3' -> 'a__b.png_3')."""
    return key.replace("/", "__").replace("#", "_")


def write_clean(folder, indices: np.ndarray, out: Path) -> Path:
    """The test split as class folders of symlinks (PNG copies for slices and archive rows)."""
    for i in indices:
        sample = folder.samples[i]
        dest = out / folder.classes[sample.label] / file_name(sample.key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if sample.index is None:
            dest.symlink_to((folder.root / sample.path).resolve())
        else:
            Image.fromarray(folder.read(i)).save(dest.with_suffix(".png"))
    return out


# ------------------------------------------------------------------------------ re-framing
def change_contrast(img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """A gamma and gain change (another scanner or weighting)."""
    gamma, gain = rng.uniform(0.6, 1.6), rng.uniform(0.7, 1.2)
    out = np.clip((img / 255.0) ** gamma * gain * 255 + 0.5, 0, 255).astype(np.uint8)
    return out, {"gamma": round(gamma, 3), "gain": round(gain, 3)}


def add_margins(img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Random black margins on each side, then more to reach an aspect ratio of 0.7-1.4."""
    h, w = img.shape[:2]
    top, bottom, left, right = (int(rng.uniform(0, 0.35) * s) for s in (h, h, w, w))
    height, width = h + top + bottom, w + left + right
    aspect = rng.uniform(0.7, 1.4)
    if width / height < aspect:
        extra = round(height * aspect) - width
        left, width = left + int(rng.integers(0, extra + 1)), width + extra
    else:
        extra = round(width / aspect) - height
        top, height = top + int(rng.integers(0, extra + 1)), height + extra
    canvas = np.zeros((height, width, *img.shape[2:]), dtype=np.uint8)
    canvas[top:top + h, left:left + w] = img
    return canvas, {"aspect": round(width / height, 3)}


def change_resolution(img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Down to as little as 150 px wide (never up), then back to the canvas size."""
    h, w = img.shape[:2]
    low = int(rng.uniform(min(150, w), w + 1))
    pil = Image.fromarray(img).resize((low, max(1, round(h * low / w))), Image.BILINEAR)
    return np.asarray(pil.resize((w, h), Image.BICUBIC)), {"low_width": low, "width": w, "height": h}


def burn_letter(img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """A white figure letter in a random corner, sized to the image."""
    pil = Image.fromarray(img)
    h, w = img.shape[:2]
    size = max(10, int(0.08 * min(h, w)))
    letter = LETTERS[int(rng.integers(len(LETTERS)))]
    x = int(0.03 * w) if rng.random() < 0.5 else w - int(0.03 * w) - size
    y = int(0.03 * h) if rng.random() < 0.5 else h - int(0.03 * h) - size
    fill = 255 if img.ndim == 2 else (255, 255, 255)
    ImageDraw.Draw(pil).text((x, y), letter, fill=fill, font=ImageFont.load_default(size=size))
    return np.asarray(pil), {"letter": letter}


def encode(img: np.ndarray, rng: np.random.Generator) -> tuple[Image.Image, str, dict]:
    """The image in a random colour mode, and the file format it is saved in."""
    mode = MODES[int(rng.integers(len(MODES)))]
    pil = Image.fromarray(img)
    if mode == "P":
        pil = pil.convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=256)
    else:
        pil = pil.convert(mode)
    fmt_name = "JPEG" if mode in ("L", "RGB") and rng.random() < 0.5 else "PNG"
    return pil, fmt_name, {"mode": mode, "format": fmt_name}


def reframe(img: np.ndarray, rng: np.random.Generator) -> tuple[Image.Image, str, dict]:
    """One test image as another source might deliver it; returns (image, format, what was done)."""
    info: dict = {}
    for step in (change_contrast, add_margins, change_resolution, burn_letter):
        img, done = step(img, rng)
        info.update(done)
    pil, file_format, done = encode(img, rng)
    return pil, file_format, {**info, **done}


def write_reframed(folder, indices: np.ndarray, out: Path, seed: int) -> dict:
    """The test split re-framed into class folders; returns a summary of what was done."""
    infos = []
    for i in indices:
        sample = folder.samples[i]
        pil, file_format, info = reframe(folder.read(i), np.random.default_rng([seed, int(i)]))
        suffix = ".jpg" if file_format == "JPEG" else ".png"
        dest = out / folder.classes[sample.label] / (Path(file_name(sample.key)).stem + suffix)
        dest.parent.mkdir(parents=True, exist_ok=True)
        pil.save(dest, file_format, **({"quality": 85} if file_format == "JPEG" else {}))
        infos.append(info)
    return summarise(infos)


def summarise(infos: list[dict]) -> dict:
    """Ranges and counts of the re-framing parameters."""
    def span(key: str) -> list[float]:
        values = [info[key] for info in infos]
        return [min(values), max(values)] if values else []

    return {"images": len(infos), "width": span("width"), "low_width": span("low_width"),
            "aspect": span("aspect"), "gamma": span("gamma"),
            "modes": dict(Counter(i["mode"] for i in infos)),
            "formats": dict(Counter(i["format"] for i in infos))}


# ------------------------------------------------------------------------------- evaluation
def tumour_specs(classes: list[str]) -> list[str] | None:
    """--map specs folding the classes into tumour / no, when exactly one class means 'no'."""
    from mediscan.evaluation.metrics import NEGATIVE_NAMES, normalize_name

    negatives = [c for c in classes if normalize_name(c) in NEGATIVE_NAMES]
    if len(classes) <= 2 or len(negatives) != 1:
        return None
    positives = [c for c in classes if c not in negatives]
    return [f"{','.join(positives)}={POSITIVE}", f"{negatives[0]}={NEGATIVE}"]


def binary_view(folder: Path, specs: list[str], out: Path) -> Path:
    """Symlinks of a class-folder set regrouped into tumour / no folders (made once, then reused)."""
    if out.exists():
        return out
    targets = {}
    for spec in specs:
        sources, target = spec.split("=")
        targets.update({s: target for s in sources.split(",")})
    for class_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        dest = out / targets[class_dir.name]
        dest.mkdir(parents=True, exist_ok=True)
        for path in sorted(class_dir.iterdir()):
            (dest / f"{class_dir.name}__{path.name}").symlink_to(path.resolve())
    return out


@contextmanager
def cache_in(folder: Path) -> Iterator[None]:
    """Point the decoding cache at `folder` while the throw-away sets are evaluated."""
    before = os.environ.get("MEDISCAN_CACHE")
    os.environ["MEDISCAN_CACHE"] = str(folder)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("MEDISCAN_CACHE", None)
        else:
            os.environ["MEDISCAN_CACHE"] = before


def score_set(run: Path, name: str, folder: Path, args: argparse.Namespace, work: Path) -> dict:
    """Accuracy (own classes) and tumour sensitivity/specificity (mapped) of one run on one set."""
    from mediscan.evaluation.runner import evaluate_external
    from mediscan.run_folder import RunFolder

    options = {"device": args.device, "progress": False, "n_resamples": args.resamples}
    metrics = evaluate_external(run, folder, name=f"shift-{name}-s{args.seed}", **options)["metrics"]
    row = {"set": name, "n": metrics["n"], "accuracy": metrics["headline"]["accuracy"]}
    specs = tumour_specs(RunFolder(run).read_meta()["classes"])
    if specs:
        view = binary_view(folder, specs, work / "binary" / name)
        metrics = evaluate_external(run, view, mapping_specs=specs,
                                    name=f"shift-{name}-s{args.seed}-binary", **options)["metrics"]
    row["sensitivity"] = metrics["headline"].get("sensitivity")
    row["specificity"] = metrics["headline"].get("specificity")
    return row


def overlap(run: Path, other: Path) -> int:
    """How many of `run`'s test images `other` trained or validated on (0 on a shared split)."""
    from mediscan.run_folder import RunFolder

    test = set(RunFolder(run).read_split().test)
    seen = RunFolder(other).read_split()
    return len(test & (set(seen.train) | set(seen.val)))


def build_sets(args: argparse.Namespace, work: Path) -> tuple[dict[str, Path], dict]:
    """The clean, reframed and (with --phantom) phantom sets; returns folders and a summary."""
    from mediscan.data.phantom import make_phantom

    folder, test = test_split(args.run, args.data)
    log(f"writing the test split ({len(test)} images), clean and re-framed")
    sets = {"clean": write_clean(folder, test, work / "sets" / "clean")}
    summary = {"reframed": write_reframed(folder, test, work / "sets" / "reframed", args.seed)}
    sets["reframed"] = work / "sets" / "reframed"
    if args.phantom:
        log(f"rendering {args.n} phantom images in each style")
        for name, style in (("phantom", "default"), ("phantom-shifted", "shifted")):
            sets[name] = make_phantom(work / "sets" / name, n=args.n, size=args.phantom_size,
                                      seed=args.seed, style=style)
            (sets[name] / "masses.json").unlink()
    return sets, summary


def drop(rows: dict[str, dict], clean: str, shifted: str) -> float | None:
    """Sensitivity lost from `clean` to `shifted`, in percentage points."""
    a, b = (rows.get(k, {}).get("sensitivity") for k in (clean, shifted))
    if not a or not b or a.get("value") is None or b.get("value") is None:
        return None
    return round(100 * (a["value"] - b["value"]), 2)


def score_run(run: Path, sets: dict[str, Path], args: argparse.Namespace, work: Path) -> dict:
    """One run on every set, with the drops."""
    from mediscan.run_folder import RunFolder

    meta = RunFolder(run).read_meta()
    log(f"evaluating {run} ({meta['recipe']['name']})")
    rows = {name: score_set(run, name, folder, args, work) for name, folder in sets.items()}
    return {"run": str(run), "recipe": meta["recipe"]["name"], "classes": meta["classes"],
            "test_overlap": overlap(args.run, run) if run != args.run else 0, "sets": rows,
            "sensitivity_drop": drop(rows, "clean", "reframed"),
            "phantom_sensitivity_drop": drop(rows, "phantom", "phantom-shifted")}


# ----------------------------------------------------------------------------------- output
def render(result: dict) -> str:
    """Per-set detail and one summary row per run."""
    detail = [[Path(r["run"]).name, name, str(s["n"]), fmt_ci(s["accuracy"]), fmt_ci(s["sensitivity"]),
               fmt_ci(s["specificity"])] for r in result["runs"] for name, s in r["sets"].items()]
    text = [table(["run", "set", "n", "accuracy % (95% CI)", "tumour sensitivity %",
                   "specificity %"], detail)]
    summary = []
    for r in result["runs"]:
        s = r["sets"]
        summary.append([Path(r["run"]).name, r["recipe"], fmt_ci(s["clean"]["sensitivity"]),
                        fmt_ci(s["reframed"]["sensitivity"]), fmt(r["sensitivity_drop"], "+.1f"),
                        fmt_ci(s["clean"]["specificity"]), fmt_ci(s["reframed"]["specificity"]),
                        fmt(r["phantom_sensitivity_drop"], "+.1f"), str(r["test_overlap"])])
    text.append(table(["run", "recipe", "sens clean", "sens reframed", "drop pts", "spec clean",
                       "spec reframed", "phantom drop pts", "test overlap"], summary))
    frame = result["reframed"]
    text.append(f"reframed: widths {frame['width']} px (down to {frame['low_width'][0]} px), "
                f"aspect {frame['aspect']}, gamma {frame['gamma']}, modes {frame['modes']}, "
                f"formats {frame['formats']}")
    return "\n\n".join(text)


def check_runs(runs: list[Path], phantom: bool) -> None:
    """Every run is finished and has the first run's classes (the sets use its class folders)."""
    from mediscan.data.phantom import PHANTOM_CLASSES
    from mediscan.run_folder import RunFolder

    first = None
    for run in map(RunFolder, runs):
        if not run.meta_file.exists() or not run.split_file.exists():
            raise SystemExit(f"{run.path}: not a finished run folder (model.json and split.json needed)")
        classes = run.read_meta()["classes"]
        first = first or classes
        if classes != first:
            raise SystemExit(f"{run.path}: classes {classes} differ from {runs[0]}'s {first}; an "
                             "ablation compares runs trained on the same classes")
    if phantom and sorted(first) != sorted(PHANTOM_CLASSES):
        raise SystemExit(f"--phantom needs a run with the phantom's classes {list(PHANTOM_CLASSES)}; "
                         f"{runs[0]} has {first}")


def run_benchmark(args: argparse.Namespace, work: Path, command: str) -> dict:
    """Build the sets once, score every run on them."""
    runs = [args.run, *[Path(r) for r in args.ablation.split(",") if r.strip()]]
    check_runs(runs, args.phantom)
    with cache_in(work / "cache"):
        sets, summary = build_sets(args, work)
        scored = [score_run(run, sets, args, work) for run in runs]
    return {"command": command, "machine": machine(), "seed": args.seed, "reframed": summary["reframed"],
            "sets": {name: len([p for p in folder.rglob("*") if p.is_file()]) for name, folder in sets.items()},
            "runs": scored}


def main(argv: list[str] | None = None) -> None:
    """Build the sets, evaluate, print, clean up."""
    args = parse_args(argv)
    command = announce(args.json)
    with scratch_dir("mediscan-shift-", args.dir, args.keep) as work:
        result = run_benchmark(args, work, command)
    emit(result, json_only=args.json, text=render(result))


if __name__ == "__main__":
    main()
