"""Does Grad-CAM look at the lesion? The pointing game on images whose lesion location is known.

For every image with a known box (the phantom's `masses.json`: "glioma/00012.png" -> {"box":
[x0, y0, x1, y1], ...}, null for no lesion) the CAM of the predicted class is computed on the
model's preprocessed view, the box is mapped onto that view (`view_box`), and a hit is a CAM
maximum inside the box. Reported per class and overall, with a 95% Wilson interval.
`localise_run` scores a run's test split, saves localisation.json and example overlays (the
box drawn in white) as plots/cam_*.png for the report.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from mediscan.data.readers import read_image
from mediscan.evaluation.stats import wilson_interval
from mediscan.explain import DEFAULT_METHOD, default_cam_layer, explain, overlay, peak_inside, view_box
from mediscan.files import atomic_path, write_json
from mediscan.predict import Classifier
from mediscan.progress import track
from mediscan.run_folder import RunFolder


@dataclass
class PointingResult:
    """Hits / images for one CAM method and layer, overall and per class."""

    method: str
    layer: str
    images: int = 0
    hits: int = 0
    per_class: dict[str, list[int]] = field(default_factory=dict)  # class -> [hits, images]

    @property
    def rate(self) -> float:
        return self.hits / self.images if self.images else float("nan")

    @property
    def ci(self) -> tuple[float, float]:
        if not self.images:
            return float("nan"), float("nan")
        return wilson_interval(self.hits, self.images)

    def to_dict(self) -> dict:
        return {**asdict(self), "rate": self.rate, "ci": list(self.ci)}


def load_boxes(masses_file: str | Path, keys: Iterable[str] | None = None,
               box_field: str = "box") -> dict[str, tuple[float, float, float, float]]:
    """{key: box} for the images that have a lesion, optionally only those in `keys`."""
    masses = json.loads(Path(masses_file).read_text())
    wanted = set(keys) if keys is not None else set(masses)
    return {key: tuple(mass[box_field]) for key, mass in masses.items() if mass and key in wanted}


def pointing_game(classifier: Classifier, root: str | Path, boxes: dict[str, tuple], *,
                  method: str = DEFAULT_METHOD, layer: str | None = None, progress: bool = True,
                  hits_and_misses: dict | None = None) -> PointingResult:
    """Score the CAM of the predicted class against each image's known lesion box.

    `hits_and_misses`, if given, collects one example key per (class, hit) pair."""
    shape = (classifier.preprocess.channels, classifier.preprocess.size, classifier.preprocess.size)
    result = PointingResult(method, layer or default_cam_layer(classifier.model, classifier.meta["model"], shape))
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for key in track(sorted(boxes), f"{method} {result.layer}", len(boxes), enabled=progress):
        image = read_image(Path(root) / key)
        cam, _ = explain(classifier, image, method=method, layer=layer)
        hit = peak_inside(cam, view_box(classifier.preprocess, image, boxes[key]))
        label = key.split("/")[0]
        if hits_and_misses is not None:
            hits_and_misses.setdefault((label, hit), key)
        counts[label][0] += hit
        counts[label][1] += 1
    result.per_class = dict(sorted(counts.items()))
    result.hits = sum(hits for hits, _ in counts.values())
    result.images = sum(n for _, n in counts.values())
    return result


def boxed_overlay(classifier: Classifier, image: np.ndarray, box: tuple, *,
                  method: str = DEFAULT_METHOD) -> np.ndarray:
    """The CAM overlay on the preprocessed view with the known lesion box drawn in white."""
    cam, _ = explain(classifier, image, method=method)
    picture = Image.fromarray(overlay(classifier.preprocess(image), cam))
    ImageDraw.Draw(picture).rectangle(view_box(classifier.preprocess, image, box), outline="white")
    return np.asarray(picture)


def localise_run(run_dir: str | Path, data: str | Path, masses_file: str | Path, *,
                 method: str = DEFAULT_METHOD, progress: bool = True) -> PointingResult:
    """Pointing game on a run's test split; writes localisation.json and plots/cam_*.png."""
    run = RunFolder(run_dir)
    keys = run.read_split().test
    boxes = load_boxes(masses_file, keys)
    classifier = Classifier.load(run_dir, device="cpu")
    examples: dict = {}
    result = pointing_game(classifier, data, boxes, method=method, progress=progress,
                           hits_and_misses=examples)
    write_json(run.localisation_file, result.to_dict(), indent=1)
    for (label, hit), key in sorted(examples.items()):
        picture = boxed_overlay(classifier, read_image(Path(data) / key), boxes[key], method=method)
        name = f"cam_{label}_{'hit' if hit else 'miss'}_{Path(key).stem}.png"
        with atomic_path(run.plots / name) as tmp:
            Image.fromarray(picture).save(tmp, format="PNG")
    return result
