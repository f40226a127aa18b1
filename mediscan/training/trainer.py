"""`train(data, recipe=...)`: folder of images in, self-describing run folder out."""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mediscan.augment import BatchAugment
from mediscan.bundle import load_checkpoint, save_bundle, save_checkpoint
from mediscan.data.characterise import Characterisation
from mediscan.data.prepare import Prepared, prepare_data
from mediscan.evaluation.calibration import fit_temperature
from mediscan.inference import batched_logits, pick_device, uses_channels_last
from mediscan.models import count_parameters, create_model, model_config
from mediscan.ood import MAX_FIT_IMAGES, fit_detector
from mediscan.progress import console, progress_bar
from mediscan.run_folder import RunFolder
from mediscan.training import distributed
from mediscan.training.loop import (
    BatchPipeline,
    Budget,
    epoch_order,
    image_source,
    train_one_epoch,
)
from mediscan.training.recipes import Recipe, get_recipe
from mediscan.training.schedule import lr_at
from mediscan.training.time_plan import TimePlan


def resolve_recipe(recipe: Recipe | str, **overrides) -> Recipe:
    """A recipe by name or object, with CLI overrides applied."""
    base = get_recipe(recipe) if isinstance(recipe, str) else recipe
    return base.with_overrides(**overrides)


def freeze_early_layers(model: nn.Module, model_name: str) -> int:
    """Stop gradients through the model's declared early layers; returns parameters frozen."""
    frozen = 0
    for layer in model_config(model_name).early_layers:
        for parameter in model.get_submodule(layer).parameters():
            parameter.requires_grad_(False)
            frozen += parameter.numel()
    return frozen


def _optimizer(model: nn.Module, recipe: Recipe, device: torch.device) -> torch.optim.Optimizer:
    fused = {"fused": True} if device.type == "cuda" else {}
    trainable = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in trainable if p.ndim > 1]
    no_decay = [p for p in trainable if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": recipe.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=recipe.lr, **fused)
    if recipe.optimizer == "adam":
        return torch.optim.Adam(groups, lr=recipe.lr, **fused)
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum, nesterov=True)
    if recipe.optimizer == "adadelta":
        return torch.optim.Adadelta(groups, lr=recipe.lr)
    raise ValueError(f"unknown optimizer {recipe.optimizer!r}; choose adamw, adam, sgd or adadelta")


def _criterion(recipe: Recipe, labels: np.ndarray, num_classes: int, device) -> nn.Module:
    weight = None
    if recipe.balance == "weights":
        counts = np.bincount(labels, minlength=num_classes).clip(min=1)
        weight = torch.tensor(len(labels) / (num_classes * counts), dtype=torch.float32, device=device)
    return nn.CrossEntropyLoss(weight=weight, label_smoothing=recipe.label_smoothing)


def _evaluate_split(model: nn.Module, prepared: Prepared, name: str, device: torch.device,
                    tta: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(logits, labels) of one split."""
    index = np.sort(prepared.indices[name])
    logits = batched_logits(model, prepared.decoded.images[index], mean=prepared.mean,
                            std=prepared.std, device=device, tta=tta)
    return logits, prepared.folder.labels[index]


def _val_metrics(model, prepared, device, criterion, plan: TimePlan | None = None) -> tuple[dict, np.ndarray]:
    """(validation loss and accuracy, validation logits); the pass is timed for the time plan."""
    began = time.perf_counter()
    logits, labels = _evaluate_split(model, prepared, "val", device)
    if plan is not None:
        plan.observe(len(labels), time.perf_counter() - began)
    if len(labels) == 0:
        return {"val_loss": float("nan"), "val_acc": float("nan")}, logits
    loss = criterion(torch.from_numpy(logits).to(device), torch.from_numpy(labels).to(device))
    return {"val_loss": float(loss), "val_acc": float((logits.argmax(1) == labels).mean())}, logits


def _is_better(row: dict, best: dict | None) -> bool:
    """Higher validation accuracy wins; lower validation loss breaks ties."""
    if best is None:
        return True
    if np.isnan(row["val_acc"]):
        return True
    key = (row["val_acc"], -row["val_loss"])
    return key > (best["val_acc"], -best["val_loss"])


@dataclass
class FitResult:
    history: list[dict]
    best_state: dict
    best_epoch: int
    seconds: float
    images_per_second: float
    images_seen: int = 0
    best_val_logits: np.ndarray | None = None  # None after a resume that kept an older best


def fit(model: nn.Module, prepared: Prepared, recipe: Recipe, *, device: torch.device,
        run_dir: Path, dist_info: distributed.DistInfo, progress: bool = True,
        resume: bool = False, compile_model: bool = False, plan: TimePlan | None = None) -> FitResult:
    """The epoch loop: train, validate, keep the best weights, stop early or on the time budget."""
    labels_all = prepared.folder.labels
    train_index = np.sort(prepared.indices["train"])
    raw_model = model
    optimizer = _optimizer(raw_model, recipe, device)
    criterion = _criterion(recipe, labels_all[train_index], len(prepared.folder.classes), device)
    state = {"epoch": 0, "history": [], "best": None, "train_seconds": 0.0, "step": 0}
    best_state = None
    if resume:
        state, best_state = load_checkpoint(run_dir, raw_model, optimizer)
    if dist_info.enabled:
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[dist_info.local_rank] if device.type == "cuda" else None)
    if compile_model:
        model = torch.compile(model)
    pipeline = BatchPipeline(
        images=image_source(prepared.decoded.images, train_index, device),
        labels=torch.as_tensor(labels_all[train_index], device=device),
        mean=torch.tensor(prepared.mean, device=device).view(1, -1, 1, 1),
        std=torch.tensor(prepared.std, device=device).view(1, -1, 1, 1),
        device=device, augment=BatchAugment(recipe.augment, seed=recipe.seed + dist_info.rank),
    )
    steps_per_epoch = max(1, math.ceil(len(train_index) / dist_info.world_size / recipe.batch_size))
    budget = Budget(total_steps=steps_per_epoch * recipe.epochs, seconds=recipe.time_budget,
                    step=state["step"])
    budget.started = time.perf_counter() - state["train_seconds"]
    if plan is not None:
        budget.seconds = plan.training_seconds(budget.started)
    generator = torch.Generator().manual_seed(recipe.seed)
    for _ in range(state["epoch"]):
        epoch_order(pipeline.labels, balance=recipe.balance, generator=generator)
    best_state = best_state or copy.deepcopy(raw_model.state_dict())
    best_epoch = state["best"]["epoch"] if state["best"] else state["epoch"]
    best_val_logits = None

    def set_lr(progress_now: float) -> float:
        lr = lr_at(progress_now, base_lr=recipe.lr, schedule=recipe.schedule, warmup=recipe.warmup)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr

    images_seen, fit_seconds = 0, 0.0
    for epoch in range(state["epoch"] + 1, recipe.epochs + 1):
        order = distributed.shard(
            epoch_order(pipeline.labels, balance=recipe.balance, generator=generator), dist_info)
        with progress_bar(f"epoch {epoch}/{recipe.epochs}", len(order),
                          progress and dist_info.is_main) as advance:
            row = train_one_epoch(model, optimizer, criterion, pipeline, order,
                                  batch_size=recipe.batch_size, budget=budget, set_lr=set_lr,
                                  on_batch=lambda n, status: advance(n, status))
        images_seen += row["images"] * dist_info.world_size
        fit_seconds += row["seconds"]
        stop = False
        if dist_info.is_main:
            metrics, val_logits = _val_metrics(raw_model, prepared, device, criterion, plan)
            row.update(metrics)
            if plan is not None:
                budget.seconds = plan.training_seconds(budget.started)
            row.update(epoch=epoch, lr=optimizer.param_groups[0]["lr"],
                       seconds=time.perf_counter() - budget.started)
            state["history"].append(row)
            if _is_better(row, state["best"]):
                state["best"] = {k: row[k] for k in ("epoch", "val_acc", "val_loss")}
                best_state, best_epoch = copy.deepcopy(raw_model.state_dict()), epoch
                best_val_logits = val_logits
            if progress:
                console.print(f"epoch {epoch}: train loss {row['train_loss']:.4f} acc "
                              f"{row['train_acc']:.4f} | val loss {row['val_loss']:.4f} acc "
                              f"{row['val_acc']:.4f} | {row['seconds']:.0f}s")
            state.update(epoch=epoch, step=budget.step,
                         train_seconds=time.perf_counter() - budget.started)
            save_checkpoint(run_dir, raw_model, optimizer, state,
                            best=None if best_epoch == epoch else best_state)
            RunFolder(run_dir).write_history(state["history"])
            patience_over = (recipe.patience is not None
                             and epoch - state["best"]["epoch"] >= recipe.patience)
            stop = patience_over or budget.exhausted
        if distributed.broadcast_flag(stop, dist_info, device):
            break
    return FitResult(state["history"], best_state, best_epoch,
                     time.perf_counter() - budget.started, images_seen / max(fit_seconds, 1e-9),
                     images_seen, best_val_logits)


def _data_summary(prepared: Prepared) -> dict:
    folder = prepared.folder
    counts = {name: {c: int((folder.labels[idx] == k).sum()) for k, c in enumerate(folder.classes)}
              for name, idx in prepared.indices.items()}
    return {
        "root": str(folder.root), "counts": counts,
        "skipped": [{"path": str(s.path), "reason": s.reason} for s in folder.skipped],
        "unreadable": [{"path": str(s.path), "reason": s.reason}
                       for s in prepared.decoded.failures],
    }


def build_meta(run_name: str, recipe: Recipe, prepared: Prepared, model: nn.Module,
               result: FitResult, temperature: float) -> dict:
    """The model.json of a finished run."""
    return {
        "name": run_name, "model": recipe.model, "classes": prepared.folder.classes,
        "preprocess": prepared.preprocess.to_dict(), "mean": list(prepared.mean),
        "std": list(prepared.std), "input_size": prepared.preprocess.size,
        "channels": prepared.preprocess.channels, "recipe": recipe.to_dict(),
        "temperature": temperature, "params": count_parameters(model),
        "best_epoch": result.best_epoch, "train_seconds": round(result.seconds, 2),
        "epochs_run": len(result.history), "images_seen": result.images_seen,
        "train_images_per_second": round(result.images_per_second, 1),
        "data": _data_summary(prepared), "tta": recipe.tta,
        **_characterisation_meta(prepared.characterisation),
    }


def _characterisation_meta(found: Characterisation | None) -> dict:
    """What the data looked like and why the preprocessing was chosen (nothing when fixed)."""
    if found is None:
        return {}
    return {"preprocess_reasons": found.reasons, "characterisation": found.to_dict()}


def _announce_failures(prepared: Prepared) -> None:
    bad = prepared.folder.skipped + prepared.decoded.failures
    if bad:
        console.print(f"[yellow]{len(bad)} file(s) skipped (listed in model.json):")
        for item in bad[:20]:
            console.print(f"  {item.path}: {item.reason}")
        if len(bad) > 20:
            console.print(f"  ... and {len(bad) - 20} more")


def default_recipe_for(device: torch.device) -> str:
    """The recipe `train` uses when none is named: the GPU recipe on CUDA, else the CPU recipe."""
    return "default" if device.type == "cuda" else "cpu"


def _announce_recipe(recipe: Recipe, named: bool, device: torch.device) -> None:
    if named:
        return
    budget = f", {recipe.time_budget / 60:.0f}-minute budget" if recipe.time_budget else ""
    console.print(f"recipe [bold]{recipe.name}[/bold] for {device.type.upper()} ({recipe.model} at "
                  f"{recipe.input_size} px{budget}); name another with --recipe, e.g. --recipe default "
                  "(the GPU recipe: hours on a CPU)")


def _finish(run_dir: Path, model: nn.Module, recipe: Recipe, prepared: Prepared, result: FitResult,
            device: torch.device, evaluate: bool, progress: bool) -> None:
    """Calibrate (temperature from the best epoch's validation logits, OOD threshold), write the
    bundle, evaluate the test split."""
    model.load_state_dict(result.best_state)
    val_logits = result.best_val_logits
    if val_logits is None:
        val_logits, _ = _evaluate_split(model, prepared, "val", device)
    val_labels = prepared.folder.labels[np.sort(prepared.indices["val"])]
    temperature = fit_temperature(val_logits, val_labels) if len(val_labels) else 1.0
    meta = build_meta(run_dir.name, recipe, prepared, model, result, float(temperature))
    detector = fit_detector(model, prepared, device=device, tta=recipe.tta)
    if detector is not None:
        detector.save(run_dir)
        meta["ood"] = detector.to_meta()
    save_bundle(run_dir, model, meta)
    if evaluate:
        from mediscan.evaluation.runner import evaluate_run

        evaluate_run(run_dir, prepared=prepared, model=model, device=device, progress=progress,
                     val_logits=None if recipe.tta else val_logits)


def train(data: str | Path, *, recipe: Recipe | str | None = None, out: str | Path | None = None,
          device: str | None = None, resume: bool = False, progress: bool = True,
          workers: int | None = None, compile_model: bool = False,
          cache_dir: Path | None = None, evaluate: bool = True, split_from: Path | None = None,
          **overrides) -> Path:
    """Train a classifier on a folder of labelled images and write a run folder; returns its path.

    No recipe: the one for this device (`default_recipe_for`). A time budget (the recipe's or
    `time_budget=`) bounds the whole call, decoding and evaluation included. `split_from`
    reuses another run's split.json (identical splits for comparisons)."""
    run_dir = Path(out or Path("runs") / time.strftime("%Y%m%d-%H%M%S"))
    run_dir.mkdir(parents=True, exist_ok=True)
    run = RunFolder(run_dir)
    started = time.perf_counter()
    torch_device = pick_device(device)
    named = recipe is not None
    if resume:
        recipe = Recipe.from_dict(run.read_recipe())
    recipe = resolve_recipe(recipe or default_recipe_for(torch_device), **overrides)
    dist_info = distributed.setup(torch_device.type)
    if dist_info.enabled and torch_device.type == "cuda":
        torch_device = torch.device("cuda", dist_info.local_rank)
    if dist_info.is_main and progress:
        _announce_recipe(recipe, named or resume, torch_device)
    torch.manual_seed(recipe.seed)
    run.write_recipe(recipe.to_dict())
    prepared = prepare_data(Path(data), recipe, split_file=run.split_file if resume else split_from,
                            workers=workers, progress=progress and dist_info.is_main,
                            cache_dir=cache_dir)
    recipe = prepared.recipe
    if dist_info.is_main:
        run.write_split(prepared.split)
        _announce_failures(prepared)
    model = create_model(recipe.model, len(prepared.folder.classes), pretrained=recipe.pretrained)
    if recipe.freeze_early:
        freeze_early_layers(model, recipe.model)
    model = model.to(torch_device)
    if uses_channels_last(torch_device):
        model = model.to(memory_format=torch.channels_last)
    plan = _time_plan(recipe, prepared, model, torch_device, started, progress and dist_info.is_main)
    result = fit(model, prepared, recipe, device=torch_device, run_dir=run_dir,
                 dist_info=dist_info, progress=progress, resume=resume,
                 compile_model=compile_model, plan=plan)
    if dist_info.is_main:
        _finish(run_dir, model, recipe, prepared, result, torch_device, evaluate, progress)
    distributed.cleanup(dist_info)
    return run_dir


def _time_plan(recipe: Recipe, prepared: Prepared, model: nn.Module, device: torch.device,
               started: float, announce: bool) -> TimePlan | None:
    """The plan that fits the whole command into the recipe's time budget (None: no budget)."""
    if not recipe.time_budget:
        return None
    plan = TimePlan(recipe.time_budget, len(prepared.indices["val"]), len(prepared.indices["test"]),
                    recipe.tta, n_ood_fit=min(MAX_FIT_IMAGES, len(prepared.indices["train"])),
                    started=started)
    plan.measure_inference(model, prepared.decoded.images[np.sort(prepared.indices["val"])],
                           mean=prepared.mean, std=prepared.std, device=device)
    if announce:
        console.print(plan.describe(time.perf_counter()))
    return plan
