"""`train(data, recipe=...)`: folder of images in, self-describing run folder out."""

from __future__ import annotations

import dataclasses
import math
import time
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from mediscan.augment import AugmentConfig, BatchAugment, get_preset
from mediscan.bundle import save_bundle
from mediscan.data.characterise import Characterisation
from mediscan.data.prepare import MRI_PRESETS, TTA_REASON, Prepared, capped_validation, prepare_data
from mediscan.evaluation.calibration import fit_temperature
from mediscan.forward import Outputs, batched_outputs, pick_device, uses_channels_last
from mediscan.heap import keep_freed_memory
from mediscan.lesion_synthesis import LesionConfig, LesionSynthesis, lesion_classes
from mediscan.models import count_parameters, create_model
from mediscan.ood import MAX_FIT_IMAGES, fit_detector, head_layer_name
from mediscan.progress import console, progress_bar
from mediscan.run_folder import RunFolder, new_run_folder
from mediscan.training import distributed
from mediscan.training.loop import BatchPipeline, Budget, image_source, train_one_epoch
from mediscan.training.decision_prior import class_bias, draw_shares
from mediscan.training.freezing import freeze_pretrained, train_all_for_tiny, training_images_per_second
from mediscan.training.optim import (
    create_criterion,
    create_optimizer,
    create_weight_average,
    loss_class_weights,
    set_learning_rate,
)
from mediscan.training.recipes import Recipe, get_recipe
from mediscan.training.run_state import FitResult, RunState
from mediscan.training.sampling import GROUPINGS, epoch_order, largest_group_gap, sampling_weights
from mediscan.training.schedule import size_at
from mediscan.training.scoring_backend import onnx_logits_of, scoring_backend, ships_graph, write_graph
from mediscan.training.time_plan import TTA_MAX_SHARE, TimePlan


def resolve_recipe(recipe: Recipe | str, **overrides) -> Recipe:
    """A recipe by name or object, with CLI overrides applied."""
    base = get_recipe(recipe) if isinstance(recipe, str) else recipe
    return base.with_overrides(**overrides)


def lesion_synthesis_for(recipe: Recipe, classes: list[str], *, seed: int) -> LesionSynthesis | None:
    """Synthetic lesions for brain MRI (an MRI augmentation preset) with a normal and a tumour class."""
    pair = lesion_classes(classes)
    if not recipe.lesions or recipe.augment not in MRI_PRESETS or pair is None:
        return None
    return LesionSynthesis(*pair, LesionConfig(probability=recipe.lesions), seed=seed)


def _evaluate_split(model: nn.Module, prepared: Prepared, name: str,
                    device: torch.device) -> tuple[Outputs, np.ndarray]:
    """(logits and the head's input features, labels) of one split."""
    index = np.sort(prepared.indices[name])
    outputs = batched_outputs(model, prepared.decoded.images[index], mean=prepared.mean, std=prepared.std,
                              device=device, feature_layer=model.get_submodule(head_layer_name(model)))
    return outputs, prepared.folder.labels[index]


def validate(model, prepared, device, criterion, plan: TimePlan | None = None,
             class_bias: np.ndarray | None = None) -> tuple[dict, Outputs]:
    """(validation loss, and accuracy with the bundle's `class_bias` added to the logits (its temperature,
    fitted after training, can still move borderline cases); validation logits and features, which
    calibration and the OOD threshold reuse); the pass is timed for the time plan."""
    began = time.perf_counter()
    outputs, labels = _evaluate_split(model, prepared, "val", device)
    if plan is not None:
        plan.observe(len(labels), time.perf_counter() - began)
    if len(labels) == 0:
        return {"val_loss": float("nan"), "val_acc": float("nan")}, outputs
    logits = outputs.logits
    loss = criterion(torch.from_numpy(logits).to(device), torch.from_numpy(labels).to(device))
    decided = logits if class_bias is None else logits + class_bias
    return {"val_loss": float(loss), "val_acc": float((decided.argmax(1) == labels).mean())}, outputs


def _parallel(model: nn.Module, dist_info: distributed.DistInfo, device: torch.device,
              compile_model: bool) -> nn.Module:
    """The network the training step calls: DDP-wrapped under torchrun, compiled if asked."""
    if dist_info.enabled:
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[dist_info.local_rank] if device.type == "cuda" else None)
    return torch.compile(model) if compile_model else model


def _pipeline(prepared: Prepared, train_index: np.ndarray, recipe: Recipe, device: torch.device,
              rank: int) -> BatchPipeline:
    """The training images and labels on their way to the device, augmented per rank."""
    return BatchPipeline(
        images=image_source(prepared.decoded.images, train_index, device),
        labels=torch.as_tensor(prepared.folder.labels[train_index], device=device),
        mean=torch.tensor(prepared.mean, device=device).view(1, -1, 1, 1),
        std=torch.tensor(prepared.std, device=device).view(1, -1, 1, 1),
        device=device, augment=BatchAugment(augment_config(recipe), seed=recipe.seed + rank),
        lesions=lesion_synthesis_for(recipe, prepared.folder.classes, seed=recipe.seed + rank),
        size_at=_progressive_sizes(recipe, prepared.preprocess.size),
        mirror_channel=prepared.preprocess.mirror_channel,
    )


def augment_config(recipe: Recipe) -> AugmentConfig:
    """The recipe's augmentation preset, without its flips when the recipe turns them off."""
    config = get_preset(recipe.augment)
    return config if recipe.flip is not False else dataclasses.replace(config, hflip=0.0, vflip=0.0)


def _progressive_sizes(recipe: Recipe, full: int) -> Callable[[float], int] | None:
    """The recipe's progressive-resizing schedule at this data set's input size (None: off)."""
    if recipe.progressive is None or recipe.progressive[1] <= 0:
        return None
    start, ramp_end = recipe.progressive
    return partial(size_at, start=int(start), full=full, ramp_end=float(ramp_end))


def _announce_lesions(lesions: LesionSynthesis | None, classes: list[str]) -> None:
    if lesions is not None:
        console.print(f"synthetic lesions: {lesions.config.probability:.0%} of the {classes[lesions.normal]} "
                      f"training images get one and count as {classes[lesions.lesion]}")


def _budget(recipe: Recipe, n_train: int, dist_info: distributed.DistInfo, state: RunState,
            plan: TimePlan | None) -> Budget:
    """Steps and seconds the loop may use, counting what a resumed run already spent."""
    steps_per_epoch = max(1, math.ceil(n_train / dist_info.world_size / recipe.batch_size))
    budget = Budget(total_steps=steps_per_epoch * recipe.epochs, seconds=recipe.time_budget,
                    step=state.step, started=time.perf_counter() - state.train_seconds)
    _fit_to_plan(budget, plan)
    return budget


def _fit_to_plan(budget: Budget, plan: TimePlan | None) -> None:
    """The loop's seconds: what the whole command's time plan leaves (refined as it measures)."""
    if plan is not None:
        budget.seconds = plan.training_seconds(budget.started)


def _replayed_generator(recipe: Recipe, n: int, weights: torch.Tensor | None, epochs_done: int) -> torch.Generator:
    """The sampling generator advanced past the epochs already trained (a resumed run draws as a fresh one)."""
    generator = torch.Generator().manual_seed(recipe.seed)
    for _ in range(epochs_done):
        epoch_order(n, weights, generator)
    return generator


def _draw_weights(prepared: Prepared, train_index: np.ndarray, recipe: Recipe,
                  announce: bool) -> torch.Tensor | None:
    """The recipe's per-image draw weights; for a grouped balance over classes and groups of look-alikes."""
    labels = prepared.folder.labels[train_index]
    if recipe.balance not in GROUPINGS:
        return sampling_weights(labels, recipe.balance)
    grouping = GROUPINGS[recipe.balance]
    groups = grouping.groups((prepared.decoded.images[i] for i in train_index), seed=recipe.seed)
    weights = sampling_weights(labels, recipe.balance, groups)
    if announce:
        console.print(f"sampling balanced over classes and {groups.max() + 1} {grouping.kind}: "
                      f"the class least like the overall mix of groups is "
                      f"{largest_group_gap(labels, groups):.0%} off it in its images, "
                      f"{largest_group_gap(labels, groups, weights):.0%} in its draws")
    return weights


def _decision_bias(prepared: Prepared, train_index: np.ndarray, recipe: Recipe, weights: torch.Tensor | None,
                   lesions: LesionSynthesis | None, announce: bool) -> np.ndarray:
    """The logit shift that makes the bundle's probabilities assume the recipe's `prior`
    (training.decision_prior), given how the training draws were weighted and relabelled."""
    labels, classes = prepared.folder.labels[train_index], prepared.folder.classes
    relabelled = None if lesions is None else (lesions.normal, lesions.lesion, lesions.config.probability)
    draws = draw_shares(labels, len(classes), weights, loss_class_weights(recipe, labels, len(classes)))
    bias = class_bias(labels, draws, recipe.prior, relabelled)
    if announce and np.abs(bias).max() > 0.01:
        low, high = int(bias.argmin()), int(bias.argmax())
        meaning = "the training split's class frequencies" if recipe.prior == "train" else "equal classes"
        console.print(f"decisions assume {meaning} (--prior {recipe.prior}), not the shares of the "
                      f"training draws: logits shifted by log(prior / draw share), from {bias[low]:+.2f} "
                      f"({classes[low]}) to {bias[high]:+.2f} ({classes[high]})")
    return bias


def _epoch_label(epoch: int, epochs: int, budget: Budget) -> str:
    """'epoch k/N', N the recipe's epochs, or '/~N' when the time budget is expected to end training first."""
    steps_per_epoch = max(1, budget.total_steps // epochs)
    fit = max(epoch, math.ceil(budget.expected_steps() / steps_per_epoch))
    return f"epoch {epoch}/{epochs}" if fit >= epochs else f"epoch {epoch}/~{fit}"


def _announce_epoch(row: dict) -> None:
    console.print(f"epoch {row['epoch']}: train loss {row['train_loss']:.4f} acc {row['train_acc']:.4f} "
                  f"| val loss {row['val_loss']:.4f} acc {row['val_acc']:.4f} | {row['seconds']:.0f}s")


def fit(model: nn.Module, prepared: Prepared, recipe: Recipe, *, device: torch.device,
        run_dir: Path, dist_info: distributed.DistInfo, progress: bool = True,
        resume: bool = False, compile_model: bool = False, plan: TimePlan | None = None) -> FitResult:
    """The epoch loop: train, validate, keep the best weights, stop early or on the time budget."""
    train_index = np.sort(prepared.indices["train"])
    optimizer = create_optimizer(model, recipe, device)
    criterion = create_criterion(recipe, prepared.folder.labels[train_index], len(prepared.folder.classes),
                                 device)
    averaged = create_weight_average(model, recipe)
    scored = model if averaged is None else averaged.module  # the weights validated and kept
    update_average = None if averaged is None else partial(averaged.update_parameters, model)
    state = RunState.begin(run_dir, model, optimizer, resume=resume, averaged=averaged,
                           keep_last=recipe.keep == "last")
    network = _parallel(model, dist_info, device, compile_model)
    pipeline = _pipeline(prepared, train_index, recipe, device, dist_info.rank)
    if progress and dist_info.is_main:
        _announce_lesions(pipeline.lesions, prepared.folder.classes)
    budget = _budget(recipe, len(train_index), dist_info, state, plan)
    weights = _draw_weights(prepared, train_index, recipe, progress and dist_info.is_main)
    bias = _decision_bias(prepared, train_index, recipe, weights, pipeline.lesions, progress and dist_info.is_main)
    generator = _replayed_generator(recipe, len(train_index), weights, state.epoch)
    for epoch in range(state.epoch + 1, recipe.epochs + 1):
        order = distributed.shard(epoch_order(len(train_index), weights, generator), dist_info)
        label = _epoch_label(epoch, recipe.epochs, budget)
        with progress_bar(label, len(order), progress and dist_info.is_main) as advance:
            row = train_one_epoch(network, optimizer, criterion, pipeline, order, batch_size=recipe.batch_size,
                                  budget=budget, set_lr=partial(set_learning_rate, optimizer, recipe),
                                  on_batch=advance,
                                  after_step=update_average)
        state.count(row, dist_info.world_size)
        stop = False
        if dist_info.is_main:
            metrics, val_outputs = validate(scored, prepared, device, criterion, plan, bias)
            row.update(metrics, epoch=epoch, lr=optimizer.param_groups[0]["lr"],
                       seconds=time.perf_counter() - budget.started)
            _fit_to_plan(budget, plan)
            state.record(row, scored, val_outputs)
            if progress:
                _announce_epoch(row)
            state.save(run_dir, model, optimizer, epoch=epoch, step=budget.step,
                       train_seconds=time.perf_counter() - budget.started, averaged=averaged)
            stop = state.patience_over(recipe.patience) or budget.exhausted
        if distributed.broadcast_flag(stop, dist_info, device):
            break
    return state.result(budget.started, bias)


def _data_summary(prepared: Prepared) -> dict:
    folder = prepared.folder
    counts = {name: {c: int((folder.labels[idx] == k).sum()) for k, c in enumerate(folder.classes)}
              for name, idx in prepared.indices.items()}
    return {
        "root": str(folder.source.resolve()), "counts": counts,  # absolute: evaluate may run elsewhere
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
        "class_bias": [round(float(b), 6) for b in result.class_bias],
        "best_epoch": result.best_epoch, "weights_epoch": result.kept_epoch,
        "train_seconds": round(result.seconds, 2),
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


def _capped_validation(prepared: Prepared, recipe: Recipe, announce: bool) -> Prepared:
    """At most MAX_VAL_IMAGES validation images for this run; the reason printed and kept in model.json."""
    prepared, reason = capped_validation(prepared, seed=recipe.seed)
    if reason is not None:
        if prepared.characterisation is not None:
            prepared.characterisation.reasons.append(reason)
        if announce:
            console.print(reason)
    return prepared


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
    """Calibrate (temperature from the kept epoch's validation logits, OOD threshold), write the
    bundle (and model.onnx where it ships: `ships_graph`), evaluate the test split."""
    model.load_state_dict(result.kept_state)
    val_outputs = result.kept_val_outputs
    if val_outputs is None:
        val_outputs, _ = _evaluate_split(model, prepared, "val", device)
    val_logits, val_features = val_outputs.logits, val_outputs.features
    val_labels = prepared.folder.labels[np.sort(prepared.indices["val"])]
    temperature = fit_temperature(val_logits, val_labels, result.class_bias) if len(val_labels) else 1.0
    meta = build_meta(run_dir.name, recipe, prepared, model, result, float(temperature))
    detector = fit_detector(model, prepared, device=device, tta=recipe.tta,
                            val_features=None if recipe.tta else val_features)
    if detector is not None:
        detector.save(run_dir)
        meta["ood"] = detector.to_meta()
    save_bundle(run_dir, model, meta)
    n_test = len(prepared.indices["test"])
    exported = ships_graph(device, n_test, result.seconds) and write_graph(run_dir, announce=progress)
    if evaluate:
        from mediscan.evaluation.runner import evaluate_run

        backend = "onnx" if exported and scoring_backend(device, n_test) == "onnx" else "torch"
        evaluate_run(run_dir, prepared=prepared, model=model if backend == "torch" else None, backend=backend,
                     device=device, progress=progress, val_logits=None if recipe.tta else val_logits)


def train(data: str | Path, *, recipe: Recipe | str | None = None, out: str | Path | None = None,
          device: str | None = None, resume: bool = False, progress: bool = True,
          workers: int | None = None, compile_model: bool = False,
          cache_dir: Path | None = None, evaluate: bool = True, split_from: Path | None = None,
          **overrides) -> Path:
    """Train a classifier on a folder of labelled images and write a run folder; returns its path.

    No recipe: the one for this device (`default_recipe_for`). A time budget (the recipe's or
    `time_budget=`) bounds the whole call, decoding and evaluation included. `split_from`
    reuses another run's split.json (identical splits for comparisons)."""
    run_dir = Path(out) if out else new_run_folder()
    run_dir.mkdir(parents=True, exist_ok=True)
    run = RunFolder(run_dir)
    started = time.perf_counter()
    torch_device = pick_device(device)
    if torch_device.type == "cpu":
        keep_freed_memory()
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
    prepared = _capped_validation(prepared, recipe, progress and dist_info.is_main)
    model = _new_model(recipe, len(prepared.folder.classes), torch_device)
    plan, recipe = _time_plan(recipe, prepared, model, torch_device, started, progress and dist_info.is_main)
    recipe = _freeze(model, recipe, prepared, plan, torch_device, run, progress,
                     decide=not (resume or dist_info.enabled))
    result = fit(model, prepared, recipe, device=torch_device, run_dir=run_dir,
                 dist_info=dist_info, progress=progress, resume=resume,
                 compile_model=compile_model, plan=plan)
    if dist_info.is_main:
        _finish(run_dir, model, recipe, prepared, result, torch_device, evaluate, progress)
    distributed.cleanup(dist_info)
    return run_dir


def _new_model(recipe: Recipe, num_classes: int, device: torch.device) -> nn.Module:
    """The recipe's network with a fresh head, on `device` (channels-last where that pays)."""
    model = create_model(recipe.model, num_classes, pretrained=recipe.pretrained, dropout=recipe.dropout,
                         drop_path=recipe.drop_path).to(device)
    return model.to(memory_format=torch.channels_last) if uses_channels_last(device) else model


def _freeze(model: nn.Module, recipe: Recipe, prepared: Prepared, plan: TimePlan | None, device: torch.device,
            run: RunFolder, announce: bool, decide: bool) -> Recipe:
    """Keep the pretrained weights the recipe fixes fixed. With `decide`, a `tiny_train_all` recipe
    first trains every layer of tiny images when the budget fits enough epochs that way
    (training.freezing); the choice goes into the run's recipe, for --resume."""
    found = prepared.characterisation
    if decide and recipe.tiny_train_all and found is not None and found.kind == "tiny" \
            and (recipe.freeze_early or recipe.freeze_depthwise):
        recipe, reason = train_all_for_tiny(recipe, _epochs_training_all(model, recipe, prepared, plan, device))
        found.reasons.append(reason)
        run.write_recipe({**run.read_recipe(), "freeze_early": recipe.freeze_early,
                          "freeze_depthwise": recipe.freeze_depthwise})
        if announce:
            console.print(reason)
    freeze_pretrained(model, recipe)
    return recipe


def _epochs_training_all(model: nn.Module, recipe: Recipe, prepared: Prepared, plan: TimePlan | None,
                         device: torch.device) -> float:
    """Epochs the budget fits with every layer trained: the recipe's without a budget, else from a probe."""
    if plan is None:
        return float(recipe.epochs)
    shape = prepared.preprocess
    rate = training_images_per_second(model, batch_size=recipe.batch_size, channels=shape.channels,
                                      size=shape.size, device=device)
    seconds = plan.training_seconds(time.perf_counter())
    return min(float(recipe.epochs), seconds * rate / len(prepared.indices["train"]))


def _tta_within(plan: TimePlan, recipe: Recipe, prepared: Prepared, announce: bool) -> Recipe:
    """The recipe without the flip TTA it chose for tiny images when the plan cannot afford it (a
    47,280-image test split mirrored: minutes of a 10-minute budget, for +0.002-0.006 AUC)."""
    if not (recipe.tta and recipe.tiny_tta) or plan.tta_affordable():
        return recipe
    plan.tta = False
    reason = (f"test-time augmentation off: mirroring {plan.tta_images:,} "
              f"calibration and test images would take ~{plan.tta_seconds():.0f}s, more than "
              f"{TTA_MAX_SHARE:.0%} of the {plan.budget:.0f}s budget; training gets the time")
    if prepared.characterisation is not None:
        reasons = prepared.characterisation.reasons
        reasons[:] = [line for line in reasons if not line.startswith(TTA_REASON)] + [reason]
    if announce:
        console.print(reason)
    return dataclasses.replace(recipe, tta=False)


def _time_plan(recipe: Recipe, prepared: Prepared, model: nn.Module, device: torch.device,
               started: float, announce: bool) -> tuple[TimePlan | None, Recipe]:
    """The plan that fits the whole command into the recipe's time budget (None: no budget), and the
    recipe it can afford."""
    if not recipe.time_budget:
        return None, recipe
    plan = TimePlan(recipe.time_budget, len(prepared.indices["val"]), len(prepared.indices["test"]),
                    recipe.tta, n_ood_fit=min(MAX_FIT_IMAGES, len(prepared.indices["train"])),
                    started=started)
    onnx_test = scoring_backend(device, len(prepared.indices["test"])) == "onnx"
    plan.measure_inference(model, prepared.decoded.images[np.sort(prepared.indices["val"])],
                           mean=prepared.mean, std=prepared.std, device=device,
                           test_logits_of=onnx_logits_of(model, mean=prepared.mean, std=prepared.std,
                                                         channels=prepared.preprocess.channels,
                                                         size=prepared.preprocess.size) if onnx_test else None)
    recipe = _tta_within(plan, recipe, prepared, announce)
    if announce:
        console.print(plan.describe(time.perf_counter()))
    return plan, recipe
