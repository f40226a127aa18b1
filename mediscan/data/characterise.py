"""Look at a sample of a data set and choose its preprocessing: crop, intensity, normalisation.

One brain-MRI default (head crop, percentile clip) hurts other modalities, so `train` and
`inspect` measure a sample of the decoded images (up to SAMPLE, spread over the classes,
downscaled to at most MEASURE_SIDE pixels) and choose from what they see:

- grey or colour: the mean chroma (max - min channel) of grey images stored as JPEG stays
  below GREY_CHROMA; colour that carries information (stained cells, fundus, dermoscopy) is
  far above it. Colour gets per-channel dataset mean/std, grey the model's statistics;
- tiny images (shorter side <= TINY_SIDE, MedMNIST's 28 px): the object is the frame, no crop;
- an object on a dark background that does not fill the frame (head MRI): the head crop and
  the foreground percentile clip (`transforms.Preprocess`, crop_foreground + clip_percentiles);
- a round colour disc on black (fundus): the same crop, which keeps the largest component,
  i.e. the circular field of view, and blanks the corners; no clip, so colour balance stays;
- anything that fills the frame (ultrasound fans, X-rays, microscopy on a light background):
  no crop, no clip;
- classes that a left-right mirror turns into each other (left/right organs, `data.mirror`):
  no flips in augmentation or test-time augmentation.

Each choice comes with a human-readable reason naming the measured figure and its threshold.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from PIL import Image
from scipy import ndimage

from mediscan.data.folders import ImageFolder
from mediscan.data.mirror import mirrored_classes, thumbnail
from mediscan.data.readers import ImageReadError
from mediscan.progress import progress_bar
from mediscan.transforms import as_image, find_foreground, to_grey

SAMPLE = 300  # images looked at
MEASURE_SIDE = 128  # images are measured on copies at most this many pixels on a side
GREY_CHROMA = 4.0  # mean chroma (0..255) below this is JPEG noise on a grey image
TINY_SIDE = 64  # images with a shorter side up to this are the object itself: no crop
DARK_LEVEL = 24.0  # mean grey level of the background at or below this is dark
MIN_BACKGROUND = 0.2  # a dark background must cover at least this fraction of the pixels
FILLS_FRAME = 0.85  # an object whose bounding box covers more of the frame fills it
ROUND = 0.1  # a disc: mask area / area of the ellipse inscribed in its box within 1 +- this
HEAD_CLIP = (0.5, 99.5)  # foreground percentiles mapped to 0..255 for objects on black


@dataclass(frozen=True)
class ImageStats:
    """Measurements of one image (fractions of its pixels, grey levels 0..255)."""

    height: int
    width: int
    chroma: float  # mean of max - min channel; 0 for grey sources
    foreground: float  # the largest bright component (holes filled)
    box: float  # its bounding box / frame
    roundness: float  # its area / the ellipse inscribed in its box
    background_level: float  # mean grey level outside it (0 when there is no outside)
    low: float  # 1st percentile of grey
    high: float  # 99th percentile of grey


@dataclass
class Characterisation:
    """What a data set looks like and the preprocessing chosen for it, with the reasons."""

    images: int
    colour: bool
    chroma: float
    height: int
    width: int
    min_side: int
    foreground: float
    box: float
    roundness: float
    background_level: float
    dynamic_range: float
    kind: str  # "tiny", "object-on-dark", "disc", "full-frame"
    crop_foreground: bool
    clip_percentiles: tuple[float, float] | None
    normalization: str  # "model" or "dataset"
    reasons: list[str] = field(default_factory=list)
    mirrored: list[tuple[str, str]] = field(default_factory=list)  # classes a left-right flip swaps
    flip: bool = True  # flips keep every class (data.mirror)

    def to_dict(self) -> dict:
        """Plain JSON-able figures, choices and reasons."""
        data = asdict(self)
        if self.clip_percentiles is not None:
            data["clip_percentiles"] = list(self.clip_percentiles)
        return data


def measure(img: np.ndarray) -> ImageStats:
    """The figures of one decoded image, measured on a copy at most MEASURE_SIDE on a side."""
    img = as_image(img)
    height, width = img.shape[:2]
    step = -(-max(height, width) // MEASURE_SIDE)
    small = np.asarray(Image.fromarray(img).reduce(step)) if step > 1 else img
    chroma = float((small.max(axis=2) - small.min(axis=2)).mean()) if small.ndim == 3 else 0.0
    grey = to_grey(small)
    low, high = (float(v) for v in np.percentile(grey, (1, 99)))
    found = find_foreground(grey)
    mask = None if found is None else found.mask
    if mask is None:
        return ImageStats(height, width, chroma, 0.0, 0.0, 0.0, float(grey.mean()), low, high)
    rows, cols = ndimage.find_objects(mask.astype(np.uint8))[0]
    box_area = (rows.stop - rows.start) * (cols.stop - cols.start)
    outside = grey[: mask.shape[0], : mask.shape[1]][~mask]
    return ImageStats(height, width, chroma, float(mask.mean()), box_area / mask.size,
                      float(mask.sum() / (np.pi / 4 * box_area)),
                      float(outside.mean()) if outside.size else 0.0, low, high)


def sample_indices(folder: ImageFolder, limit: int = SAMPLE, seed: int = 0) -> np.ndarray:
    """Up to `limit` sample indices spread evenly over the classes, test split left out."""
    labels = folder.labels
    pool = np.arange(len(folder))
    splits = np.array([s.split or "" for s in folder.samples])
    if (splits == "test").any() and (splits != "test").any():
        pool = pool[splits != "test"]
    rng = np.random.default_rng(seed)
    per_class = [rng.permutation(pool[labels[pool] == k]) for k in range(len(folder.classes))]
    picked: list[int] = []
    for depth in range(max((len(c) for c in per_class), default=0)):
        picked += [int(c[depth]) for c in per_class if depth < len(c)]
        if len(picked) >= limit:
            break
    return np.sort(np.array(picked[:limit], dtype=np.int64))


def characterise(folder: ImageFolder, *, limit: int = SAMPLE, seed: int = 0,
                 progress: bool = False) -> Characterisation:
    """Measure a sample of the folder's images and choose crop, clip, normalisation and flips."""
    stats, thumbs, labels = [], [], []
    indices = sample_indices(folder, limit, seed)
    with progress_bar("characterising", len(indices), progress) as advance:
        for i in indices:
            try:
                img = folder.read(int(i))
                stats.append(measure(img))
                thumbs.append(thumbnail(img))
                labels.append(folder.labels[i])
            except (ImageReadError, ValueError):
                pass
            advance()
    if not stats:
        raise ValueError(f"{folder.root}: none of the {len(indices)} sampled images could be read; "
                         "run `mediscan inspect` on it to see what is wrong")
    found = choose(stats)
    found.mirrored = mirrored_classes(np.stack(thumbs), np.array(labels), folder.classes)
    found.flip = not found.mirrored
    found.reasons.append(_flip_reason(found.mirrored))
    return found


def _flip_reason(mirrored: list[tuple[str, str]]) -> str:
    if not mirrored:
        return "flips kept: no class looks like the mirror image of another"
    pairs = ", ".join(f"{a} <-> {b}" for a, b in mirrored)
    return (f"no flips (augmentation nor test-time): a left-right mirror turns one class into another "
            f"({pairs})")


def _median(stats: list[ImageStats], name: str) -> float:
    return float(np.median([getattr(s, name) for s in stats]))


def choose(stats: list[ImageStats]) -> Characterisation:
    """The preprocessing for images with these measurements, and why."""
    m = {name: _median(stats, name) for name in ("chroma", "foreground", "box", "roundness",
                                                  "background_level", "height", "width")}
    min_side = int(np.median([min(s.height, s.width) for s in stats]))
    dynamic = float(np.median([s.high - s.low for s in stats]))
    colour = m["chroma"] >= GREY_CHROMA
    reasons = [f"colour: mean chroma {m['chroma']:.1f} >= {GREY_CHROMA:g} (beyond JPEG noise): colour kept, "
               "per-channel dataset mean/std" if colour else
               f"grey: mean chroma {m['chroma']:.1f} < {GREY_CHROMA:g} (JPEG noise level): the model's "
               "mean/std"]
    kind, reason = _framing(m, min_side, colour)
    reasons.append(reason)
    clip = HEAD_CLIP if kind == "object-on-dark" else None
    reasons.append(f"dynamic range: 1st-99th percentile spans {dynamic:.0f} of 255 grey levels; "
                   + (f"foreground percentiles {HEAD_CLIP[0]:g}-{HEAD_CLIP[1]:g} -> 0..255" if clip
                      else "intensities kept as stored"))
    return Characterisation(
        images=len(stats), colour=colour, chroma=round(m["chroma"], 2), height=int(m["height"]),
        width=int(m["width"]), min_side=min_side, foreground=round(m["foreground"], 3),
        box=round(m["box"], 3), roundness=round(m["roundness"], 3),
        background_level=round(m["background_level"], 1), dynamic_range=round(dynamic, 1), kind=kind,
        crop_foreground=kind in ("object-on-dark", "disc"), clip_percentiles=clip,
        normalization="dataset" if colour else "model", reasons=reasons)


def _framing(m: dict[str, float], min_side: int, colour: bool) -> tuple[str, str]:
    """(kind, reason): tiny, object on a dark background, disc (field of view) or full frame."""
    if min_side <= TINY_SIDE:
        return "tiny", (f"tiny images ({int(m['height'])}x{int(m['width'])} px, shorter side <= "
                        f"{TINY_SIDE}): no crop, the frame is the object")
    background = 1 - m["foreground"]
    dark = background >= MIN_BACKGROUND and m["background_level"] <= DARK_LEVEL
    if dark and m["box"] <= FILLS_FRAME:
        if colour and abs(m["roundness"] - 1) <= ROUND:
            return "disc", (f"circular field of view: a round colour disc (area / inscribed ellipse "
                            f"{m['roundness']:.2f}, 1 +- {ROUND:g}) on black ({background:.0%} of pixels, "
                            f"level {m['background_level']:.0f}): crop to the disc, corners blanked")
        return "object-on-dark", (f"dark background {background:.0%} of pixels (level "
                                  f"{m['background_level']:.0f} <= {DARK_LEVEL:g}), object box "
                                  f"{m['box']:.0%} of the frame: head crop")
    if m["box"] > FILLS_FRAME:
        why = f"the object's box covers {m['box']:.0%} of the frame (> {FILLS_FRAME:.0%})"
    else:
        why = (f"background {background:.0%} of pixels at level {m['background_level']:.0f} is not a dark "
               f"margin (needs >= {MIN_BACKGROUND:.0%} at <= {DARK_LEVEL:g})")
    return "full-frame", f"full frame: {why}: no crop"
