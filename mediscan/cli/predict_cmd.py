"""`mediscan predict RUN FILES...` and `mediscan explain RUN FILE` (Grad-CAM).

predict's exit code: 0 when every input was predicted, 1 when some were skipped (listed at the end;
the rest are still predicted), 2 for usage or model errors."""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from mediscan.cli.common import (
    BACKEND_HELP,
    EXIT_SKIPPED,
    Device,
    JsonOut,
    Run,
    check_probability,
    emit_json,
    user_errors,
)
from mediscan.ood import VERDICT
from mediscan.progress import console


def _write_csv(batch, classes: list[str]) -> None:
    writer = csv.writer(sys.stdout)
    writer.writerow(["file", "label", "probability", "uncertain", "ood_score", "outside", *classes])
    for p in batch.predictions:
        ood = ["", ""] if p.ood_score is None else [f"{p.ood_score:.4f}", int(p.outside)]
        writer.writerow([p.source, p.label, f"{p.probability:.6f}", int(p.uncertain), *ood,
                         *(f"{p.probabilities[c]:.6f}" for c in classes)])


def _print_table(batch) -> None:
    width = max((len(p.source) for p in batch.predictions), default=10)
    for p in batch.predictions:
        flag = "  [yellow]uncertain[/yellow]" if p.uncertain else ""
        flag += f"  [red]{VERDICT}[/red]" if p.outside else ""
        console.print(f"{p.source:<{width}}  {p.label:<12} {100 * p.probability:5.1f}%{flag}",
                      highlight=False)


def _seen_in_training(run: Path, meta: dict, predictions) -> tuple[dict[str, str | None], dict]:
    """Per predicted file the key of the training/validation image it duplicates (or None),
    and {"checked", "reason"}; one index of the run's images, built once (hashes cached)."""
    from mediscan.data.readers import read_image
    from mediscan.evaluation.seen import SeenIndex, seen_folder

    folder = seen_folder(run, meta)
    if isinstance(folder, str):
        console.print(f"[yellow]not checked for training images[/yellow]: {folder}")
        return {}, {"checked": False, "reason": folder}
    index = SeenIndex(folder, progress=False)
    return {p.source: index.match(read_image(p.source)) for p in predictions}, {"checked": True, "reason": ""}


def predict(
    run: Path = typer.Argument(..., help="Run folder written by `mediscan train`."),
    inputs: List[Path] = typer.Argument(..., help="Image files and/or folders."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
    csv_out: bool = typer.Option(False, "--csv", help="Print CSV."),
    cam: Optional[Path] = typer.Option(None, help="Write Grad-CAM overlays into this folder."),
    backend: str = typer.Option("auto", help=BACKEND_HELP + " Grad-CAM (--cam) runs on torch."),
    abstain_below: Optional[float] = typer.Option(
        None, callback=check_probability, metavar="P",
        help="Mark predictions whose top probability is below P (0 <= P < 1) as uncertain."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda or mps."),
    seen_check: bool = typer.Option(
        True, "--seen-check/--no-seen-check",
        help="With --json: mark images that duplicate the run's training/validation images."),
) -> None:
    """Predict the class of each image; skipped inputs are listed at the end (exit code 1)."""
    from mediscan.predict import Classifier

    with user_errors():
        classifier = Classifier.load(run, device=device, backend="torch" if cam and backend == "auto" else backend,
                                     abstain_below=abstain_below)
        batch = classifier.predict_files(inputs)
        if cam is not None:
            from mediscan.explain import save_overlays

            save_overlays(classifier, [Path(p.source) for p in batch.predictions], cam)
    if json_out:
        payload = {"backend": classifier.backend, "predictions": [p.to_dict() for p in batch.predictions],
                   "failures": [{"path": str(f.path), "reason": f.reason} for f in batch.failures]}
        if seen_check:
            seen, payload["seen_check"] = _seen_in_training(run, classifier.meta, batch.predictions)
            for entry in payload["predictions"]:
                entry["seen_in_training"] = seen.get(entry["source"])
        emit_json(payload)
    elif csv_out:
        _write_csv(batch, classifier.classes)
    else:
        _print_table(batch)
    for failure in batch.failures:
        console.print(f"[yellow]skipped[/yellow] {failure.path}: {failure.reason}", highlight=False)
    if batch.failures:
        console.print(f"{len(batch.failures)} input(s) skipped, {len(batch.predictions)} predicted",
                      highlight=False)
        raise typer.Exit(EXIT_SKIPPED)


def explain(
    run: Run,
    file: Annotated[Path, typer.Argument(help="The image to explain.")],
    method: Annotated[str, typer.Option(help="gradcam++ (default) or gradcam.")] = "gradcam++",
    target: Annotated[str | None, typer.Option(
        help="Class to explain (default: the predicted one).")] = None,
    layer: Annotated[str | None, typer.Option(
        help="Target layer, a dotted module name (default: the model's cam_layer).")] = None,
    out: Annotated[Path | None, typer.Option(
        help="Overlay PNG (default: ./<FILE stem>_cam.png).")] = None,
    colormap: Annotated[str, typer.Option(help="jet or inferno.")] = "jet",
    json_out: JsonOut = False,
    device: Device = None,
) -> None:
    """Grad-CAM overlay of one image, on the model's preprocessed view of it."""
    from mediscan.data.readers import read_image
    from mediscan.explain import explain as explain_image
    from mediscan.explain import save_overlay
    from mediscan.predict import Classifier

    with user_errors():
        classifier = Classifier.load(run, device=device)
        image = read_image(file)
        cam, prediction = explain_image(classifier, image, method=method, target=target,
                                        layer=layer)
        out = save_overlay(classifier.preprocess(image), cam, out or Path(f"{file.stem}_cam.png"),
                           colormap=colormap)
    if json_out:
        emit_json({**prediction.to_dict(), "method": method, "overlay": str(out)})
    else:
        console.print(prediction.sentence(), highlight=False)
        console.print(f"{method} overlay written to {out}", highlight=False)


def register(app: typer.Typer) -> None:
    for command in (predict, explain):
        app.command()(command)
