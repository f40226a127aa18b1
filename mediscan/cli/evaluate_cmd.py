"""`mediscan evaluate`, `mediscan report`."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from mediscan.cli.common import (
    BACKEND_HELP,
    EXIT_SKIPPED,
    check_file_name,
    check_probability,
    emit_json,
    parse_duration,
    user_errors,
)
from mediscan.progress import console


def _fmt(entry: dict | None) -> str:
    if not entry or entry.get("value") is None:
        return "-"
    ci = entry.get("ci")
    return f"{entry['value']:.4f}" + (f" ({ci[0]:.4f}-{ci[1]:.4f})" if ci else "")


def print_metrics(title: str, metrics: dict) -> None:
    """Headline metrics with CIs and the per-class table, for people."""
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value (95% CI)")
    for name, entry in metrics["headline"].items():
        table.add_row(name, _fmt(entry))
    console.print(table)
    per_class = Table(title="per class")
    for column in ("class", "sensitivity", "specificity", "precision", "F1", "AUC", "n"):
        per_class.add_column(column)
    for name, row in metrics["per_class"].items():
        auc = row.get("roc_auc")
        per_class.add_row(name, f"{row['recall']:.4f}", f"{row['specificity']:.4f}",
                          f"{row['precision']:.4f}", f"{row['f1']:.4f}",
                          "-" if auc is None else f"{auc:.4f}", str(row["support"]))
    console.print(per_class)


def print_seen(seen: dict, metrics: dict, unseen: dict | None) -> None:
    """How many images the model was trained on, and every metric on the whole folder and the rest."""
    if not seen["checked"]:
        console.print(f"[yellow]not checked for training images[/yellow]: {seen['reason']}")
        return
    colour = "red" if seen["images"] else "green"
    console.print(f"[{colour}]seen by the model[/{colour}]: {seen['images']} of {seen['of']} images "
                  f"duplicate its training/validation images ({seen['exact']} exact, {seen['near']} near); "
                  f"list: {seen['file']}")
    if not seen["images"]:
        return
    table = Table(title="whole folder vs its unseen part")
    for column in ("metric", f"all ({seen['of']})", f"unseen ({seen['unseen']})"):
        table.add_column(column)
    for name, entry in metrics["headline"].items():
        table.add_row(name, _fmt(entry), _fmt((unseen or {}).get("headline", {}).get(name)))
    for cls, row in metrics["per_class"].items():
        other = ((unseen or {}).get("per_class") or {}).get(cls) or {}
        for key in ("recall", "specificity"):
            label = "sensitivity" if key == "recall" else key
            value = other.get(key)
            table.add_row(f"{cls} {label}", f"{row[key]:.4f}", "-" if value is None else f"{value:.4f}")
    console.print(table)


def _pct(value: float | None) -> str:
    """0.912 -> '91.2%'; None (nothing kept) -> '-'."""
    return "-" if value is None else f"{value:.1%}"


def abstain_line(block: dict) -> str:
    """'abstain below 0.80: coverage 91.2%, accuracy on kept 99.1% (n uncertain 50)'."""
    return (f"abstain below {block['threshold']:.2f}: coverage {_pct(block['coverage']['value'])}, "
            f"accuracy on kept {_pct(block['accuracy']['value'])} (n uncertain {block['n_uncertain']})")


def evaluate(
    run: Path = typer.Argument(..., help="Run folder."),
    data: Optional[Path] = typer.Argument(None, help="Another data set (default: the run's test split)."),
    map_: Optional[List[str]] = typer.Option(
        None, "--map", help="Map model classes to the data's, e.g. 'glioma,meningioma,pituitary=yes'."),
    map_file: Optional[Path] = typer.Option(None, help="A file of mapping lines 'a,b=x'."),
    name: Optional[str] = typer.Option(
        None, callback=check_file_name,
        help="Name of this evaluation, a plain file name (default: the folder name)."),
    resamples: int = typer.Option(1000, help="Bootstrap resamples for the confidence intervals."),
    abstain_below: Optional[float] = typer.Option(
        None, callback=check_probability, metavar="P",
        help="Mark predictions whose top probability is below P (0 <= P < 1) as uncertain and "
             "report coverage and accuracy on the rest."),
    adapt: bool = typer.Option(
        False, "--adapt", help="Re-estimate batch-norm statistics on DATA first (one new site; "
                               "test-time adaptation, not saved to the run)."),
    backend: str = typer.Option("auto", help=BACKEND_HELP + " --adapt runs on torch."),
    device: Optional[str] = typer.Option(None),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Metrics with 95% confidence intervals, confusion matrix, ROC, calibration, worst errors."""
    from mediscan.evaluation.runner import evaluate_external, evaluate_run

    specs = list(map_ or [])
    if map_file is not None:
        specs += [line.strip() for line in map_file.read_text().splitlines() if line.strip()]
    with user_errors():
        if data is None:
            result = evaluate_run(run, device=device, progress=progress, n_resamples=resamples,
                                  abstain_below=abstain_below, backend=backend)
        else:
            result = evaluate_external(run, data, mapping_specs=specs, name=name, device=device,
                                       progress=progress, n_resamples=resamples,
                                       abstain_below=abstain_below, adapt=adapt,
                                       backend="torch" if adapt and backend == "auto" else backend)
    if json_out:
        emit_json(result)
        return
    if result:
        metrics = result.get("metrics") or result["test"]
        print_metrics(f"{run} on {data or 'its test split'}", metrics)
        if "abstain" in metrics:
            console.print(abstain_line(metrics["abstain"]))
        if "seen" in result:
            print_seen(result["seen"], metrics, result["unseen_metrics"])
        console.print(f"report: {Path(run) / 'report.html'}")


def robustness(
    run: Path = typer.Argument(..., help="Run folder."),
    data: Optional[Path] = typer.Argument(None, help="Data set with the model's classes (default: test split)."),
    corruptions: Optional[str] = typer.Option(None, help="Comma-separated subset (default: all)."),
    severities: str = typer.Option("1,2,3,4,5", help="Comma-separated severities 1..5."),
    seed: int = typer.Option(0, help="Seed of the random corruptions."),
    backend: str = typer.Option("auto", help=BACKEND_HELP),
    device: Optional[str] = typer.Option(None),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Accuracy under noise, blur, ghosting, contrast, JPEG, bias field... at five severities."""
    from mediscan.evaluation.robustness import run_robustness

    with user_errors():
        result = run_robustness(
            run, data, corruptions=corruptions.split(",") if corruptions else None,
            severities=[int(s) for s in severities.split(",")], seed=seed, device=device,
            progress=progress, backend=backend)
    if json_out:
        emit_json(result)
        return
    table = Table(title=f"accuracy under corruption (clean {result['clean_accuracy']:.4f})")
    table.add_column("corruption")
    for severity in result["severities"]:
        table.add_column(f"sev {severity}")
    for name, entry in result["corruptions"].items():
        table.add_row(name, *(f"{a:.4f}" for a in entry["accuracy"]))
    console.print(table)
    console.print(f"robustness score (mean corrupted / clean accuracy): {result['score']:.4f}")


def compare(
    data: Path = typer.Argument(..., help="Data set (class folders or Training/Testing)."),
    models: str = typer.Option("seed_cnn,resnet18,efficientnet_lite0", help="Comma-separated names."),
    out: Path = typer.Option(Path("runs/compare"), help="Comparison folder (re-run to resume)."),
    recipe: Optional[str] = typer.Option(None, help="Recipe shared by all models (default: the one `train` "
                                         "uses on this device)."),
    epochs: Optional[int] = typer.Option(None),
    time_budget: Optional[str] = typer.Option(None, help="Budget of each model's train command, e.g. 10m."),
    input_size: Optional[int] = typer.Option(None, help="Override the recipe's input size in pixels."),
    seed: int = typer.Option(0),
    robustness_check: bool = typer.Option(True, "--robustness/--no-robustness"),
    device: Optional[str] = typer.Option(None),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Train several architectures on one identical split and seed; table, chart, McNemar tests."""
    from mediscan.evaluation.compare import compare_models

    with user_errors():
        result = compare_models(data, [m.strip() for m in models.split(",") if m.strip()], out=out,
                                recipe=recipe, device=device, robustness=robustness_check,
                                progress=progress, epochs=epochs, input_size=input_size,
                                seed=seed, time_budget=parse_duration(time_budget))
    if json_out:
        emit_json(result)
    else:
        _print_comparison(result, out)
    if result["failed"]:
        raise typer.Exit(EXIT_SKIPPED)


def _print_comparison(result: dict, out: Path) -> None:
    table = Table(title="architecture comparison (identical split and seed)")
    for column in ("model", "accuracy (95% CI)", "macro F1", "AUC", "ECE", "params", "train s",
                   "img/s", "robustness"):
        table.add_column(column)
    for row in result["rows"]:
        table.add_row(row["name"], _fmt(row["accuracy"]), _fmt(row["macro_f1"]),
                      _fmt(row["macro_auc"]), f"{row['ece']:.4f}" if row["ece"] is not None else "-",
                      f"{row['params']:,}", f"{row['train_seconds']:.0f}",
                      f"{row['images_per_second']:.0f}",
                      f"{row['robustness_score']:.3f}" if "robustness_score" in row else "-")
    console.print(table)
    for row in result["rows"]:
        if row.get("note"):
            console.print(f"{row['name']}: {row['note']}")
    for failure in result["failed"]:
        console.print(f"[red]not compared: {failure['name']}: {failure['error']}")
    if result["rows"]:
        console.print(f"report: {out / 'report.html'}")


def report(run: Path = typer.Argument(..., help="Run folder.")) -> None:
    """(Re)write the run's self-contained report.html."""
    from mediscan.evaluation.runner import refresh_report

    with user_errors():
        refresh_report(run)
    console.print(f"report: {Path(run) / 'report.html'}")


def register(app: typer.Typer) -> None:
    app.command()(evaluate)
    app.command()(robustness)
    app.command()(compare)
    app.command()(report)
