"""The issue-15 out-of-distribution benchmark: how many foreign images a run flags, vs its own test split.

    python bench/ood.py RUN                 # the run must have OOD statistics (trained by this version)
    python bench/ood.py RUN --calibrate     # fit them first, for a run trained before they existed

Foreign kinds (`--n` images each, 256 px unless noted), made here, nothing downloaded:

- noise: uniform RGB noise, or Gaussian grey noise of random mean and spread;
- blank: one grey level or one colour, drawn at random;
- photos: random crops (scale, position, flip) of the photographs shipped with matplotlib
  (grace_hopper.jpg, Minduka_Present_Blue_Pack.png);
- synthetic: smooth colour fields, checkerboards and 1/f ("pink") noise;
- chest-xray: PneumoniaMNIST test images (`--chest`, 28 px, upscaled bicubically to 224 px).

The own test split comes from the run's split.json and data (model.json `data.root`). Every
image goes through `Classifier.outputs_batch` (one pass: logits and features) after the run's
preprocessing, as `mediscan predict` does. Prints the flagged fraction per kind and for the
test split (the run's `outside` verdict), the AUROC of test vs each kind and vs all foreign
images (sklearn `roc_auc_score`) for the shipped score and, for comparison, the energy score and
max-softmax on the same logits; then one JSON line (`--json`: the JSON line only).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib
import numpy as np
from bench_common import announce, emit, fmt, log, machine, table
from PIL import Image
from scipy.ndimage import gaussian_filter
from scipy.special import logsumexp
from sklearn.metrics import roc_auc_score

from mediscan.data.prepare import load_run_data
from mediscan.ood import calibrate_run
from mediscan.predict import Classifier

SIZE = 256
PHOTOS = ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png")
CHEST = Path("/work/shared/datasets/pneumoniamnist.npz")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="Run folder written by `mediscan train`.")
    parser.add_argument("--n", type=int, default=200, help="Images per foreign kind.")
    parser.add_argument("--chest", type=Path, default=CHEST, help="A MedMNIST-style chest X-ray .npz.")
    parser.add_argument("--calibrate", action="store_true",
                        help="Fit the run's OOD statistics first (writes ood.safetensors, model.json).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None)
    parser.add_argument("--json", action="store_true", help="Print the JSON line only.")
    return parser.parse_args(argv)


def noise(rng: np.random.Generator) -> np.ndarray:
    if rng.random() < 0.5:
        return rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    grey = rng.normal(rng.uniform(30, 220), rng.uniform(10, 80), (SIZE, SIZE))
    return np.clip(grey, 0, 255).astype(np.uint8)


def blank(rng: np.random.Generator) -> np.ndarray:
    value = rng.integers(0, 256, 3) if rng.random() < 0.5 else np.repeat(rng.integers(0, 256), 3)
    return np.broadcast_to(value.astype(np.uint8), (SIZE, SIZE, 3)).copy()


def _photo_sources() -> list[np.ndarray]:
    folder = Path(matplotlib.get_data_path()) / "sample_data"
    return [np.asarray(Image.open(folder / name).convert("RGB")) for name in PHOTOS]


def photo(rng: np.random.Generator, sources: list[np.ndarray]) -> np.ndarray:
    image = sources[rng.integers(len(sources))]
    side = int(min(image.shape[:2]) * rng.uniform(0.4, 1.0))
    y, x = rng.integers(0, image.shape[0] - side + 1), rng.integers(0, image.shape[1] - side + 1)
    crop = image[y:y + side, x:x + side]
    crop = crop[:, ::-1] if rng.random() < 0.5 else crop
    return np.asarray(Image.fromarray(np.ascontiguousarray(crop)).resize((SIZE, SIZE), Image.BILINEAR))


def synthetic(rng: np.random.Generator) -> np.ndarray:
    kind = rng.integers(3)
    if kind == 0:  # smooth colour field
        field = gaussian_filter(rng.normal(size=(SIZE, SIZE, 3)), (rng.uniform(8, 40),) * 2 + (0,))
    elif kind == 1:  # checkerboard in two random colours
        period = int(rng.integers(4, 64))
        yy, xx = np.mgrid[:SIZE, :SIZE]
        board = ((yy // period + xx // period) % 2)[..., None]
        field = np.where(board, rng.uniform(0, 1, 3), rng.uniform(0, 1, 3))
    else:  # 1/f noise
        spectrum = np.fft.fft2(rng.normal(size=(SIZE, SIZE)))
        f = np.hypot(*np.meshgrid(np.fft.fftfreq(SIZE), np.fft.fftfreq(SIZE)))
        field = np.real(np.fft.ifft2(spectrum / np.maximum(f, 1 / SIZE)))[..., None].repeat(3, -1)
    field = (field - field.min()) / (np.ptp(field) + 1e-9)
    return (255 * field).astype(np.uint8)


def chest_xrays(path: Path, n: int, rng: np.random.Generator) -> list[np.ndarray]:
    images = np.load(path)["test_images"]
    chosen = rng.choice(len(images), min(n, len(images)), replace=False)
    return [np.asarray(Image.fromarray(images[i]).resize((224, 224), Image.BICUBIC)) for i in chosen]


def foreign_sets(n: int, chest: Path, seed: int) -> dict[str, list[np.ndarray]]:
    """Each foreign kind's images (uint8 HxW or HxWx3)."""
    rng = np.random.default_rng(seed)
    sources = _photo_sources()
    sets = {"noise": [noise(rng) for _ in range(n)], "blank": [blank(rng) for _ in range(n)],
            "photos": [photo(rng, sources) for _ in range(n)],
            "synthetic": [synthetic(rng) for _ in range(n)]}
    if chest.is_file():
        sets["chest-xray"] = chest_xrays(chest, n, rng)
    else:
        log(f"{chest} not found: no chest-xray set")
    return sets


def scores(classifier: Classifier, preprocessed: np.ndarray) -> dict[str, np.ndarray]:
    """The shipped OOD score and two logit scores (higher = more foreign) from one forward pass."""
    outputs = classifier.outputs_batch(preprocessed)
    temperature = classifier.temperature
    return {"ood": classifier.ood_scores(outputs),
            "energy": -temperature * logsumexp(outputs.logits / temperature, axis=1),
            "msp": -classifier.probabilities(outputs.logits).max(axis=1)}


def measure(classifier: Classifier, test_images: np.ndarray, sets: dict) -> dict:
    """Flagged fractions per set and the AUROC of test vs each foreign kind and vs all of them."""
    test = scores(classifier, test_images)
    foreign = {name: scores(classifier, np.stack([classifier.preprocess(i) for i in images]))
               for name, images in sets.items()}
    foreign["all foreign"] = {key: np.concatenate([f[key] for f in foreign.values()]) for key in test}
    rows = {"own test split": {"n": len(test_images), "flagged": _flagged(classifier, test["ood"])}}
    for name, result in foreign.items():
        rows[name] = {"n": len(result["ood"]), "flagged": _flagged(classifier, result["ood"])}
        for key in test:
            truth = np.r_[np.zeros(len(test[key])), np.ones(len(result[key]))]
            rows[name][f"auroc_{key}"] = float(roc_auc_score(truth, np.r_[test[key], result[key]]))
    return rows


def _flagged(classifier: Classifier, values: np.ndarray) -> float:
    return float(classifier.ood.outside(values).mean())


def render(rows: dict, meta: dict) -> str:
    ood = meta["ood"]
    header = (f"{meta.get('name')}: {meta['model']}, trained {meta.get('train_seconds')} s; OOD "
              f"{ood['method']} on {ood['layer']} features (rank {ood['rank']}), threshold "
              f"{ood['threshold']:.3f} = validation {100 * ood['quantile']:.0f}th percentile")
    lines = [[name, str(r["n"]), fmt(100 * r["flagged"]), fmt(r.get("auroc_ood"), ".4f"),
              fmt(r.get("auroc_energy"), ".4f"), fmt(r.get("auroc_msp"), ".4f")] for name, r in rows.items()]
    return header + "\n" + table(["set", "images", "flagged %", "AUROC ood", "AUROC energy",
                                  "AUROC max-softmax"], lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    command = announce(args.json)
    if args.calibrate:
        log(f"fitting OOD statistics for {args.run}")
        calibrate_run(args.run, device=args.device, progress=not args.json)
    classifier = Classifier.load(args.run, device=args.device)
    if classifier.ood is None:
        raise SystemExit(f"{args.run}: no OOD statistics in model.json; rerun with --calibrate")
    prepared = load_run_data(args.run, classifier.meta, progress=not args.json)
    test_images = np.asarray(prepared.decoded.images[np.sort(prepared.indices["test"])])
    rows = measure(classifier, test_images, foreign_sets(args.n, args.chest, args.seed))
    result = {"command": command, "run": args.run, "ood": classifier.meta["ood"], "sets": rows,
              "train_seconds": classifier.meta.get("train_seconds"), "machine": machine()}
    emit(result, json_only=args.json, text=render(rows, classifier.meta))


if __name__ == "__main__":
    main()
