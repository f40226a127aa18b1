"""Named training recipes: the five seed tutorials reproduced by name, and mediscan's own."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace

AUTO = "auto"
AUTO_FIELDS = ("channels", "crop_foreground", "clip_percentiles", "normalization", "augment", "flip", "balance",
               "mirror_channel")
BALANCES = ("none", "weights", "sampler", "sources", "layout", AUTO)  # training.optim, training.sampling
PRIORS = ("train", "balanced", "draws")  # training.decision_prior
KEEPS = ("last", "best")  # training.run_state


@dataclass(frozen=True)
class Recipe:
    """Everything that decides how a model is trained, stored in model.json for reproducibility."""

    name: str
    description: str
    model: str = "resnet18"
    input_size: int | None = None  # None: the model's default input size
    tiny_input_size: int | None = None  # for tiny images (28-64 px, data.characterise); None: input_size
    # "auto" (channels, crop_foreground, clip_percentiles, normalization, augment): chosen from the data by
    # mediscan.data.characterise when training starts; the choice and why go into model.json
    channels: int | str = "auto"  # 1, 3 or "auto" (the model's)
    fit: str = "pad"  # "pad" keeps the aspect ratio, "stretch" is the tutorials' plain resize
    crop_foreground: bool | str = "auto"
    clip_percentiles: tuple[float, float] | None | str = "auto"
    normalization: str = "auto"  # "model" (the model's mean/std), "dataset" (computed, recipe 5), "auto"
    ordinal: bool = False  # labels are ordered grades: also report quadratic-weighted kappa
    # the third input channel mirrored left-right about the upright head (transforms.Preprocess); "auto": on
    # for grey heads on black (the MRI augmentations, data.prepare.mirror_for)
    mirror_channel: bool | str = "auto"
    pretrained: bool = False
    freeze_early: bool = False  # keep the model's early (generic) pretrained layers fixed
    freeze_depthwise: bool = False  # keep pretrained depthwise filters > 3 x 3 fixed (training.freezing)
    # tiny images (data.characterise): no pretrained layer kept fixed when the budget fits enough epochs that
    # way (training.freezing)
    tiny_train_all: bool = False
    epochs: int = 30
    batch_size: int = 64
    optimizer: str = "adamw"  # adamw | adam | sgd | adadelta
    lr: float = 2e-3
    tiny_lr: float | None = None  # peak learning rate for tiny images (data.characterise); None: lr
    weight_decay: float = 0.05
    momentum: float = 0.9
    schedule: str = "onecycle"  # onecycle | cosine | constant
    warmup: float = 0.1  # fraction of training spent warming up (onecycle)
    label_smoothing: float = 0.1
    # EfficientNet-Lite (models.registry: takes_dropout): dropout before the classifier, and stochastic depth
    # (the deepest block's chance of being skipped in a training step); other models train without
    dropout: float = 0.0
    drop_path: float = 0.0
    # progressive resizing: (start px, progress at which full size is reached); None or (0, 0): off
    progressive: tuple[int, float] | None = None
    ema: float | None = None  # decay of a moving average of the weights, per step; validated and bundled
    augment: str = "auto"  # a preset of mediscan.augment.PRESETS, or "auto" (data.prepare.augmentation_for)
    flip: bool | str = "auto"  # the preset's flips (and flip TTA); "auto": off when a mirror changes the class
    balance: str = "sampler"  # none | weights | sampler | sources | layout (training.sampling) | auto
    prior: str = "train"  # the class shares the probabilities assume: train | balanced | draws (decision_prior)
    lesions: float = 0.0  # brain MRI (MRI augmentations): share of normal images given a synthetic lesion
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    group_duplicates: bool = True
    patience: int | None = None  # early stopping: epochs without improvement of the val metric
    keep: str = "last"  # the weights shipped: "last" (annealed by the schedule) or "best" (validation accuracy)
    seed: int = 0
    time_budget: float | None = None  # seconds
    tta: bool = False
    tiny_tta: bool = False  # test-time flip averaging for tiny images (data.characterise), unless tta is given
    source: str = ""
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def auto_fields(self) -> list[str]:
        """The fields still "auto": to be chosen from the data when training starts."""
        return [name for name in AUTO_FIELDS if getattr(self, name) == AUTO]

    def with_overrides(self, **overrides) -> Recipe:
        """A copy with the given (non-None) fields replaced."""
        known = {f.name for f in fields(self)}
        unknown = set(overrides) - known
        if unknown:
            raise ValueError(f"unknown recipe fields: {sorted(unknown)}")
        for name, allowed in (("balance", BALANCES), ("prior", PRIORS), ("keep", KEEPS)):
            if overrides.get(name) not in (None, *allowed):
                raise ValueError(f"{name} {overrides[name]!r} is not one of {', '.join(allowed)}")
        given = {k: v for k, v in overrides.items() if v is not None}
        if "input_size" in given:
            given.setdefault("tiny_input_size", None)  # an explicit input size holds for every data set
        if "lr" in given:
            given.setdefault("tiny_lr", None)
        if "tta" in given:
            given.setdefault("tiny_tta", False)
        if "freeze_early" in given or "freeze_depthwise" in given:
            given.setdefault("tiny_train_all", False)
        if given.get("pretrained") is False:
            given.update(freeze_early=False, freeze_depthwise=False)  # only pretrained weights are kept fixed
        if "patience" in given:
            given.setdefault("keep", "best")  # early stopping ships the best epoch, not the one it stopped at
        return replace(self, **given)

    @classmethod
    def from_dict(cls, data: dict) -> Recipe:
        data = dict(data)
        data.setdefault("mirror_channel", False)  # recipes written before it existed had none
        for key in ("clip_percentiles", "fractions", "progressive"):
            if data.get(key) is not None and data[key] != AUTO:
                data[key] = tuple(data[key])
        return cls(**data)


_TUTORIAL = dict(
    channels=3, crop_foreground=False, clip_percentiles=None, normalization="model", fit="stretch", flip=True,
    label_smoothing=0.0,
    weight_decay=0.0, schedule="constant", balance="none", prior="draws", keep="best",
    group_duplicates=False, mirror_channel=False,
)

RECIPES: dict[str, Recipe] = {
    recipe.name: recipe
    for recipe in [
        Recipe(
            "default",
            "mediscan's recipe: ResNet-18 from scratch, preprocessing chosen from the data (crop, "
            "intensity, normalisation), aspect-preserving resize, strong geometric + photometric augmentation "
            "(brain MRI: simulated brain extraction, synthetic lesions in 35% of the normal images; the "
            "upright head's mirror image as the third input channel), "
            "AdamW one-cycle, label smoothing, balanced sampling (brain MRI: over classes and groups of "
            "look-alike thumbnails) with decisions under the training split's class frequencies, "
            "duplicate-aware split",
            model="resnet18", input_size=224, epochs=40, batch_size=128, lr=3e-3, patience=None,
            lesions=0.35, tiny_tta=True, balance=AUTO,
        ),
        Recipe(
            "cpu",
            "for a laptop CPU: EfficientNet-Lite0 with ImageNet weights (offline), stem, first three "
            "stages and 5x5 depthwise filters frozen, fine-tuned at 128 px (tiny images: 96 px, every layer "
            "trained when the budget fits 12 epochs that way) with the default preprocessing and augmentation "
            "in a 10-minute budget that decides the epochs (at most 30); peak learning rate 4e-3 (tiny images: "
            "2e-3, and flip TTA when flips keep the classes); dropout 0.2 before the classifier and stochastic "
            "depth 0.1",
            model="efficientnet_lite0", pretrained=True, freeze_early=True, freeze_depthwise=True,
            input_size=128, tiny_input_size=96, tiny_train_all=True,
            epochs=30, batch_size=48, lr=4e-3, tiny_lr=2e-3, tiny_tta=True, weight_decay=0.01, time_budget=600.0,
            dropout=0.2, drop_path=0.1, lesions=0.35, balance=AUTO,
        ),
        Recipe(
            "demo",
            "the embedded demo: ResNet-18 from scratch on the phantom at 96 px, 12 epochs or a "
            "5-minute budget for the whole training command, whichever ends first",
            model="resnet18", input_size=96, epochs=12, batch_size=64, lr=3e-3,
            crop_foreground=False, augment="demo", time_budget=300.0,
        ),
        Recipe(
            "tutorial-cnn",
            "seed recipe 1 (Keras, 4-class brain MRI): seed CNN, 130x130 RGB stretched, rescale "
            "1/255, shear 0.2 / zoom 0.3 / shift 0.2 nearest-fill augmentation, 15% validation, "
            "batch 16, Adam 1e-3, 10 epochs, seed 123",
            model="seed_cnn", input_size=130, epochs=10, batch_size=16, optimizer="adam",
            lr=1e-3, augment="keras-tumor", fractions=(0.75, 0.15, 0.10), seed=123,
            source="seed-recipes.md #1", **_TUTORIAL,
        ),
        Recipe(
            "tutorial-binary-cnn",
            "seed recipe 2 (Keras, tumour / no tumour): Conv16-32-64 + Dense 512 at 150x150, "
            "minority-class oversampling with rotation/mirror/flip augmentation, 80/20 split, "
            "Adam, 100 epochs",
            model="tumor_cnn", input_size=150, epochs=100, batch_size=32, optimizer="adam",
            lr=1e-3, augment="flips-rotations", fractions=(0.8, 0.1, 0.1),
            source="seed-recipes.md #2",
            **{**_TUTORIAL, "balance": "sampler"},
        ),
        Recipe(
            "tutorial-vgg16",
            "seed recipe 3: VGG16 transfer learning, 8:1:1 split, normalised pixels",
            model="vgg16", pretrained=True, input_size=224, epochs=10, batch_size=32,
            optimizer="adam", lr=1e-4, augment="none", fractions=(0.8, 0.1, 0.1),
            source="seed-recipes.md #3", **_TUTORIAL,
        ),
        Recipe(
            "tutorial-malaria-resnet50v2",
            "seed recipe 4 (malaria cells): ResNet50V2 (ImageNet) + AvgPool/Dense128/Dropout "
            "head at 128x128, rotation 20 / zoom 0.05 / shift 0.05 / shear 0.05 / h-flip, "
            "70/30 split, batch 32, Adam, 30 epochs",
            model="resnet50v2_malaria", pretrained=True, input_size=128, epochs=30,
            batch_size=32, optimizer="adam", lr=1e-3, augment="keras-malaria",
            fractions=(0.7, 0.15, 0.15), source="seed-recipes.md #4", **_TUTORIAL,
        ),
        Recipe(
            "tutorial-resnet18",
            "seed recipe 5 (PyTorch, binary brain MRI): ResNet18 (ImageNet), 64 px, dataset "
            "mean/std, rotation 30 + h-flip, SGD lr 1e-4 momentum 0.9, batch 4, 10 epochs, "
            "20% validation, checkpoint on best validation accuracy",
            model="resnet18", pretrained=True, input_size=64, epochs=10, batch_size=4,
            optimizer="sgd", lr=1e-4, momentum=0.9, augment="rotate-flip",
            fractions=(0.7, 0.2, 0.1), source="seed-recipes.md #5",
            **{**_TUTORIAL, "normalization": "dataset"},
        ),
    ]
}


def get_recipe(name: str) -> Recipe:
    """A named recipe; the error lists the valid names."""
    try:
        return RECIPES[name]
    except KeyError:
        raise ValueError(f"unknown recipe {name!r}; choose one of: {', '.join(RECIPES)}") from None
