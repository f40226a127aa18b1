"""`mediscan models`, `mediscan train`, `mediscan demo`."""

from __future__ import annotations

import shlex
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import typer
from rich.table import Table

from mediscan.cli.common import (
    EXIT_INTERRUPTED,
    check_augment,
    check_share,
    emit_json,
    fail,
    parse_duration,
    parse_progressive,
    user_errors,
)
from mediscan.progress import console
from mediscan.training.distributed import is_main_process


def models(json_out: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List the registered models with parameter counts and default input sizes."""
    from mediscan.models import count_parameters, create_model, list_models

    rows = [{**cfg.to_dict(), "params": count_parameters(create_model(cfg.name, 4))}
            for cfg in list_models()]
    if json_out:
        emit_json(rows)
        return
    table = Table(title="mediscan models (parameters with a 4-class head)")
    for column in ("name", "params", "input", "pretrained weights", "description"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["name"], f"{row['params']:,}", f"{row['input_size']}px",
                      row["pretrained_source"] or "-", row["description"])
    console.print(table)
    console.print("Any timm model also works by name: --model timm/<name>")


def _headline(run_dir: Path) -> dict:
    from mediscan.run_folder import RunFolder

    run = RunFolder(run_dir)
    meta = run.read_meta()
    summary = {"run": str(run_dir), "model": meta["model"], "classes": meta["classes"],
               "train_seconds": meta["train_seconds"], "best_epoch": meta["best_epoch"],
               "weights_epoch": meta.get("weights_epoch", meta["best_epoch"]),
               "epochs_run": meta.get("epochs_run"), "images_seen": meta.get("images_seen")}
    if run.metrics_file.exists():
        headline = run.read_metrics().get("test", {}).get("headline", {})
        summary["test_accuracy"] = headline.get("accuracy")
        summary["test_balanced_accuracy"] = headline.get("balanced_accuracy")
    return summary


def _localise(run_dir: Path, data: Path, progress: bool) -> dict:
    """Where the demo model looks: the pointing game on the phantom's planted masses."""
    from mediscan.evaluation.localisation import localise_run
    from mediscan.evaluation.runner import refresh_report

    result = localise_run(run_dir, data, data / "masses.json", progress=progress)
    refresh_report(run_dir)
    return result.to_dict()


def _print_headline(summary: dict) -> None:
    acc = summary.get("test_accuracy")
    text = f"test accuracy {acc['value']:.4f} (95% CI {acc['ci'][0]:.4f}-{acc['ci'][1]:.4f})" \
        if isinstance(acc, dict) else "no test split evaluated"
    console.print(f"[green]done[/green]: {summary['run']} | {summary['model']} | {text} | "
                  f"trained in {summary['train_seconds']:.0f}s, {summary['epochs_run']} epochs, "
                  f"{summary['images_seen']:,} images seen (weights of epoch {summary['weights_epoch']}, "
                  f"best validation accuracy at epoch {summary['best_epoch']})")


EMA_HELP = ("Validate and ship a moving average of the weights with this decay per step, e.g. 0.995 "
            "(0: off).")
DROPOUT_HELP = "Dropout before the classifier, a share in [0, 1] (EfficientNet-Lite; the cpu recipe: 0.2)."
DROP_PATH_HELP = ("Stochastic depth: the deepest block's chance of being skipped in a training step (EfficientNet-"
                  "Lite; the cpu recipe: 0.1).")
PROGRESSIVE_HELP = ("Progressive resizing START_PX,UNTIL: train smaller inputs first, growing to full size at "
                    "that share of training, e.g. 96,0.7 (off: full size throughout).")
FLIP_HELP = "Flips in augmentation and TTA (default: off when a mirror turns one class into another)."
LESIONS_HELP = "Brain MRI: share of the normal training images given a synthetic lesion (tumour; 0: off)."
CROP_HELP = "Crop to the object on a dark background (default: chosen from the data)."
ORDINAL_HELP = "Labels are ordered grades: also report quadratic-weighted kappa."
MIRROR_HELP = ("The head turned upright and its left-right mirror image as the third input channel, so that the "
               "model sees each pixel beside its counterpart in the other hemisphere (default: on for grey heads "
               "on black).")
KEEP_HELP = ("Weights to ship: last (the epoch the schedule annealed to, default) or best (highest validation "
             "accuracy, the seed tutorials').")
BALANCE_HELP = ("How training draws images: none | weights | sampler (classes equally) | sources (classes x "
                "intensity groups) | layout (classes x thumbnail groups) | auto (layout for grey heads on black, "
                "else sampler).")
AUGMENT_HELP = ("Augmentation preset (default: chosen from the data: mri for grey heads on black, light for tiny "
                "images, strong otherwise); mri-contrast adds random intensity curves, for MRI of one weighting "
                "that must read others.")
PRIOR_HELP = ("Class shares the probabilities assume: train (the training split's, default: accuracy), balanced "
              "(equal: balanced accuracy, rare-class recall) or draws (as the sampler drew them).")


def train(
    data: Path = typer.Argument(..., help="Folder of class folders (or Training/Testing, train/val/test, .npz)."),
    model: Optional[str] = typer.Option(None, help="Model name (see `mediscan models`)."),
    recipe: Optional[str] = typer.Option(
        None, help="Named recipe, e.g. default (GPU), cpu, tutorial-cnn; default: the one for this device."),
    out: Optional[Path] = typer.Option(None, help="Run folder to write (default: a new runs/<date-time>)."),
    epochs: Optional[int] = typer.Option(None, help="Override the recipe's epochs."),
    batch_size: Optional[int] = typer.Option(None, help="Override the batch size."),
    lr: Optional[float] = typer.Option(None, help="Override the peak learning rate."),
    input_size: Optional[int] = typer.Option(None, help="Override the input size in pixels."),
    pretrained: Optional[bool] = typer.Option(None, "--pretrained/--no-pretrained", help="ImageNet weights."),
    seed: Optional[int] = typer.Option(None, help="Random seed (split, init, augmentation)."),
    patience: Optional[int] = typer.Option(None, help="Early stopping patience in epochs (then --keep best)."),
    keep: Optional[str] = typer.Option(None, help=KEEP_HELP),
    time_budget: Optional[str] = typer.Option(None, help="Fit the whole command in a budget, e.g. 10m (0: none)."),
    augment: Optional[str] = typer.Option(None, callback=check_augment, help=AUGMENT_HELP),
    balance: Optional[str] = typer.Option(None, help=BALANCE_HELP),
    prior: Optional[str] = typer.Option(None, help=PRIOR_HELP),
    crop: Optional[bool] = typer.Option(None, "--crop/--no-crop", help=CROP_HELP),
    channels: Optional[int] = typer.Option(None, help="1 or 3 input channels (default: the model's)."),
    ordinal: Optional[bool] = typer.Option(None, "--ordinal/--no-ordinal", help=ORDINAL_HELP),
    mirror_channel: Optional[bool] = typer.Option(None, "--mirror-channel/--no-mirror-channel", help=MIRROR_HELP),
    tta: Optional[bool] = typer.Option(None, "--tta/--no-tta", help="Test-time augmentation (h-flip)."),
    flip: Optional[bool] = typer.Option(None, "--flip/--no-flip", help=FLIP_HELP),
    ema: Optional[float] = typer.Option(None, help=EMA_HELP),
    dropout: Optional[float] = typer.Option(None, callback=check_share, help=DROPOUT_HELP),
    drop_path: Optional[float] = typer.Option(None, callback=check_share, help=DROP_PATH_HELP),
    progressive: Optional[str] = typer.Option(None, callback=parse_progressive, help=PROGRESSIVE_HELP),
    lesions: Optional[float] = typer.Option(None, callback=check_share, help=LESIONS_HELP),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:1 or mps (default: best available)."),
    resume: bool = typer.Option(False, help="Continue the interrupted run in --out."),
    workers: Optional[int] = typer.Option(None, help="Decoding processes."),
    compile_model: bool = typer.Option(False, "--compile", help="torch.compile the model."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    json_out: bool = typer.Option(False, "--json", help="Print the run summary as JSON."),
) -> None:
    """Train a classifier and write a self-describing run folder."""
    from mediscan.training.trainer import train as train_run

    out = _run_folder(out, resume)  # named here for the resume hint
    with user_errors(), _resume_hint(data, out):
        run_dir = train_run(
            data, recipe=recipe, out=out, device=device, resume=resume, progress=progress, workers=workers,
            compile_model=compile_model, model=model, epochs=epochs, batch_size=batch_size, lr=lr,
            input_size=input_size, pretrained=pretrained, seed=seed, patience=patience, keep=keep,
            time_budget=parse_duration(time_budget), augment=augment, balance=balance, prior=prior, tta=tta,
            flip=flip, ema=ema, crop_foreground=crop, channels=channels, ordinal=ordinal, lesions=lesions,
            progressive=progressive, mirror_channel=mirror_channel, dropout=dropout, drop_path=drop_path)
    if is_main_process():
        _show_headline(_headline(run_dir), json_out)


def _show_headline(summary: dict, json_out: bool) -> None:
    emit_json(summary) if json_out else _print_headline(summary)


def _run_folder(out: Path | None, resume: bool) -> Path:
    """`--out`, or a new default run folder (torchrun without --out, or --resume without it: a usage error)."""
    from mediscan.run_folder import new_run_folder

    if out is not None:
        return out
    if resume:
        raise typer.BadParameter("--resume needs --out RUN (the run folder to continue)")
    with user_errors():
        return new_run_folder()


@contextmanager
def _resume_hint(data: Path, out: Path) -> Iterator[None]:
    """Ctrl-C: exit code 130 with the command that continues the run."""
    try:
        yield
    except KeyboardInterrupt:
        command = shlex.join(["mediscan", "train", str(data), "--out", str(out), "--resume"])
        fail(f"training interrupted; resume with: {command}", EXIT_INTERRUPTED)


NEXT_STEPS = """
Next, try:
  mediscan predict {run} {example}        # one image -> class and probability
  mediscan evaluate {run}                 # metrics with confidence intervals
  mediscan explain {run} {example}        # Grad-CAM: where the model looked
  mediscan serve {run}                    # REST API + web page on http://127.0.0.1:8000
  mediscan inspect YOUR_DATA              # duplicates, leakage, broken files
  mediscan train YOUR_DATA --out runs/mine
Report: {run}/report.html
"""


def demo(
    out: Path = typer.Option(Path("mediscan-demo"), help="Where to put the phantom data and the run."),
    n: int = typer.Option(2000, help="Number of phantom images."),
    epochs: Optional[int] = typer.Option(None, help="Override the demo recipe's epochs."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda or mps."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Generate a synthetic brain-MRI phantom, train, evaluate and write a report."""
    from mediscan.data.phantom import make_phantom
    from mediscan.training.trainer import train as train_run

    data = out / "phantom"
    if not (data / "masses.json").exists():
        console.print(f"generating {n} phantom brain MRI slices in {data} ...")
        make_phantom(data, n=n, seed=0)
    with user_errors():
        run_dir = train_run(data, recipe="demo", out=out / "run", device=device,
                            progress=progress, epochs=epochs)
        summary = {**_headline(run_dir), "localisation": _localise(run_dir, data, progress)}
    if json_out:
        emit_json(summary)
        return
    _print_headline(summary)
    hits = summary["localisation"]
    console.print(f"Grad-CAM++ peak inside the planted mass: {hits['hits']}/{hits['images']} tumour test "
                  f"images ({100 * hits['rate']:.0f}%, 95% CI {100 * hits['ci'][0]:.0f}-"
                  f"{100 * hits['ci'][1]:.0f}%) at {hits['layer']}")
    example = next(iter(sorted((data / "glioma").glob("*.png"))))
    console.print(NEXT_STEPS.format(run=run_dir, example=example))


def register(app: typer.Typer) -> None:
    app.command()(models)
    app.command()(train)
    app.command()(demo)
