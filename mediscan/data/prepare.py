"""Data preparation: a folder of labelled images decoded and split for a run.

`prepare_data` (training) scans the folder, chooses the "auto" preprocessing from the data,
decodes every image once (cached), splits and picks the normalisation. `load_run_data`
(evaluate, robustness, compare, OOD calibration) rebuilds a finished run's view of its data from
what the run recorded: model.json's preprocessing and mean/std, and split.json."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mediscan.bundle_meta import MAX_CLASSES
from mediscan.data.cache import DecodedImages, load_images
from mediscan.data.characterise import Characterisation, characterise
from mediscan.data.folders import ImageFolder, scan_folder
from mediscan.data.split import Split, split_run
from mediscan.models import model_config
from mediscan.progress import console
from mediscan.run_folder import RunFolder
from mediscan.training.recipes import Recipe
from mediscan.transforms import Preprocess

MAX_VAL_IMAGES = 5000  # validation images a run scores (capped_validation)
MRI_PRESETS = ("mri", "mri-contrast")  # augmentations for heads: synthetic lesions, mirror channel, layout draws
TTA_REASON = "test-time augmentation: predictions averaged with the left-right mirror"  # tta_for's reason


@dataclass
class Prepared:
    """A data set decoded and split for one run."""

    folder: ImageFolder
    decoded: DecodedImages
    split: Split
    indices: dict[str, np.ndarray]
    preprocess: Preprocess
    mean: tuple[float, ...]
    std: tuple[float, ...]
    recipe: Recipe | None = None  # with the preprocessing chosen from the data (None: a finished run's)
    characterisation: Characterisation | None = None  # None: the recipe fixed every choice


def augmentation_for(found: Characterisation) -> tuple[str, str]:
    """The augmentation preset for this data, and why."""
    if found.kind == "tiny":
        return "light", "light (tiny images: blur, noise and downsampling would erase their detail)"
    if found.crop_foreground and not found.colour:
        return "mri", "mri (grey objects on black: simulated brain extraction, so the skull cannot stand in for " \
                      "a label)"
    return "strong", "strong (geometric and photometric, blur, noise and downsampling)"


def balance_for(augment: str) -> tuple[str, str]:
    """How training draws its images for data given this augmentation preset, and why."""
    if augment in MRI_PRESETS:
        return "layout", ("sampling: balanced over classes and groups of look-alike thumbnails (in the brain "
                          "Training folder the view tells the classes apart: sagittal and coronal normal brains "
                          "were called tumours)")
    return "sampler", "sampling: every class drawn equally often"


def mirror_for(augment: str, channels: int | str) -> tuple[bool, str | None]:
    """Whether the third input channel is the upright head mirrored left-right, and why when it is."""
    if augment in MRI_PRESETS and channels == 3:
        return True, ("mirror channel: the head turned upright, the third channel mirrored left-right (each pixel "
                      "beside its counterpart in the other hemisphere: BraTS AUROC +0.04, sensitivity up)")
    return False, None


def input_size_for(found: Characterisation, recipe: Recipe) -> tuple[int | None, str | None]:
    """The recipe's input size, or its size for tiny images; and why when it differs."""
    if found.kind != "tiny" or not recipe.tiny_input_size:
        return recipe.input_size, None
    size = recipe.tiny_input_size
    return size, (f"input {size} px: tiny images ({found.min_side} px) upsampled {size / found.min_side:.1f}x, "
                  f"the recipe's size for tiny images (its size for the rest: {recipe.input_size} px)")


def lr_for(found: Characterisation, recipe: Recipe) -> tuple[float, str | None]:
    """The recipe's peak learning rate, or its rate for tiny images; and why when it differs."""
    if found.kind != "tiny" or not recipe.tiny_lr:
        return recipe.lr, None
    return recipe.tiny_lr, (f"learning rate {recipe.tiny_lr:g}: the recipe's for tiny images "
                            f"(its rate for the rest: {recipe.lr:g})")


def tta_for(found: Characterisation, recipe: Recipe) -> tuple[bool, str | None]:
    """The recipe's test-time augmentation, or its choice for tiny images; and why when it differs."""
    if found.kind != "tiny" or not recipe.tiny_tta or recipe.tta or not found.flip:
        return recipe.tta, None
    return True, (f"{TTA_REASON} (tiny images: inference is cheap, and it ranked PneumoniaMNIST cases "
                  "better, AUC +0.002 to +0.008)")


def choose_preprocessing(folder: ImageFolder, recipe: Recipe, *,
                         progress: bool = True) -> tuple[Recipe, Characterisation | None]:
    """The recipe with its "auto" preprocessing fields chosen from the data, and the findings."""
    auto = recipe.auto_fields()
    if not auto:
        return _without_flip_tta(recipe), None
    found = characterise(folder, progress=progress)
    augment, why = augmentation_for(found)
    if "augment" in auto:
        found.reasons.append(f"augmentation: {why}")
    balance, why_balance = balance_for(augment if "augment" in auto else recipe.augment)
    if "balance" in auto:
        found.reasons.append(why_balance)
    size, why_size = input_size_for(found, recipe)
    lr, why_lr = lr_for(found, recipe)
    tta, why_tta = tta_for(found, recipe)
    found.reasons.extend(why for why in (why_size, why_lr, why_tta) if why)
    chosen = {"channels": model_config(recipe.model).channels, "crop_foreground": found.crop_foreground,
              "clip_percentiles": found.clip_percentiles, "normalization": found.normalization,
              "augment": augment, "flip": found.flip, "balance": balance}
    effective = {name: chosen[name] if name in auto else getattr(recipe, name) for name in ("augment", "channels")}
    chosen["mirror_channel"], why_mirror = mirror_for(effective["augment"], effective["channels"])
    if "mirror_channel" in auto and chosen["mirror_channel"]:
        found.reasons.append(why_mirror)
    if progress:
        console.print(f"preprocessing chosen from {found.images} images ({', '.join(auto)}):")
        for reason in found.reasons:
            console.print(f"  {reason}")
    chosen_recipe = dataclasses.replace(recipe, input_size=size, lr=lr, tta=tta,
                                        **{name: chosen[name] for name in auto})
    return _without_flip_tta(chosen_recipe), found


def _without_flip_tta(recipe: Recipe) -> Recipe:
    """Test-time augmentation is a horizontal flip: off wherever the recipe's flips are off."""
    return dataclasses.replace(recipe, tta=False) if recipe.tta and recipe.flip is False else recipe


def preprocess_for(recipe: Recipe) -> Preprocess:
    """The preprocessing a recipe implies (input size defaults to the model's); no "auto" left."""
    auto = recipe.auto_fields()
    if auto:
        raise ValueError(f"recipe {recipe.name!r}: {', '.join(auto)} still 'auto'; choose them from the "
                         "data first (choose_preprocessing) or give fixed values")
    config = model_config(recipe.model)
    size = recipe.input_size or config.input_size
    if config.fixed_input_size and size != config.input_size:
        raise ValueError(f"{recipe.model} is built for {config.input_size}-px inputs (its Flatten + Dense layers "
                         f"fix the size), not {size} px; train it with --input-size {config.input_size}")
    return Preprocess(size=size, channels=recipe.channels, fit=recipe.fit,
                      crop_foreground=recipe.crop_foreground,
                      clip_percentiles=recipe.clip_percentiles, mirror_channel=recipe.mirror_channel)


def _normalisation(recipe: Recipe, images: np.ndarray, train_index: np.ndarray):
    """The model's mean/std, or (recipe 5) the training images' own per-channel mean/std."""
    if recipe.normalization == "dataset":
        sample = np.asarray(images[np.sort(train_index[:2000])], dtype=np.float32) / 255.0
        return tuple(sample.mean(axis=(0, 2, 3)).tolist()), tuple(sample.std(axis=(0, 2, 3)).tolist())
    cfg = model_config(recipe.model)
    return tuple(cfg.mean[: recipe.channels]), tuple(cfg.std[: recipe.channels])


def prepare_data(data: Path, recipe: Recipe, *, split_file: Path | None = None,
                 workers: int | None = None, progress: bool = True,
                 cache_dir: Path | None = None) -> Prepared:
    """Scan, decode (cached) and split; unreadable files are reported and left out."""
    folder = _class_folders(data)
    recipe, found = choose_preprocessing(folder, recipe, progress=progress)
    preprocess = preprocess_for(recipe)
    decoded = load_images(folder, preprocess, workers=workers, progress=progress,
                          cache_dir=cache_dir)
    if split_file is not None and split_file.exists():
        split = Split.load(split_file)
    else:
        split = split_run(folder, decoded.ok, fractions=recipe.fractions, seed=recipe.seed,
                          group_duplicates=recipe.group_duplicates, workers=workers, progress=progress)
    indices = split.indices(folder)
    mean, std = _normalisation(recipe, decoded.images, indices["train"])
    return Prepared(folder, decoded, split, indices, preprocess, mean, std, recipe, found)


def capped_validation(prepared: Prepared, limit: int | None = None,
                      seed: int = 0) -> tuple[Prepared, str | None]:
    """The run's view with at most `limit` validation images (a seeded random sample), and why.

    Validation scores every epoch (and picks one with `keep="best"`), fits the temperature and the
    OOD threshold; 5,000 images pin accuracy to about +-0.6 points. A 24,000-image official validation split
    (TissueMNIST) would cost four times the inference, time a budget gives to training instead.
    split.json keeps the whole split."""
    limit = MAX_VAL_IMAGES if limit is None else limit
    val = prepared.indices["val"]
    if len(val) <= limit:
        return prepared, None
    kept = np.sort(np.random.default_rng(seed).choice(val, limit, replace=False))
    return (dataclasses.replace(prepared, indices={**prepared.indices, "val": kept}),
            f"validation: {limit:,} of the {len(val):,} validation images (random sample), each epoch and "
            "for calibration")


def _class_folders(data: Path) -> ImageFolder:
    """The scanned folder; refused with what to do when it holds one class or too many."""
    folder = scan_folder(data)
    if len(folder.classes) < 2:
        raise ValueError(f"{data}: found one class ({folder.classes[0]}); point at the folder "
                         "that holds the class folders (e.g. DATA/cell_images, not DATA)")
    if len(folder.classes) > MAX_CLASSES:
        raise ValueError(f"{data}: {len(folder.classes)} class folders, more than the {MAX_CLASSES} "
                         "a model can have; point at the folder that holds the class folders")
    return folder


def load_run_data(run_dir: str | Path, meta: dict, *, workers: int | None = None,
                  progress: bool = True) -> Prepared:
    """A finished run's data set, decoded with the preprocessing model.json records and split by
    its split.json (never a new split: that would mix training images into the test set)."""
    run = RunFolder(run_dir)
    root = Path(meta["data"]["root"])
    if not root.exists():
        raise ValueError(f"{run.path}: its training data {root} is not on this machine; evaluate "
                         "on a folder you have instead: mediscan evaluate RUN DATA")
    split = run.read_split()
    folder = scan_folder(root)
    preprocess = Preprocess.from_dict(meta["preprocess"])
    decoded = load_images(folder, preprocess, workers=workers, progress=progress)
    return Prepared(folder, decoded, split, split.indices(folder), preprocess, tuple(meta["mean"]),
                    tuple(meta["std"]))
