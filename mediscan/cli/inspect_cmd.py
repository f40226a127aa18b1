"""`mediscan inspect`: counts, broken files, duplicates, label conflicts and leakage of a data set."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from mediscan.cli.common import emit_json, user_errors
from mediscan.data.hashing import DEFAULT_MAX_DISTANCE, DEFAULT_MIN_CORRELATION
from mediscan.progress import console


def inspect(
    data: Annotated[Path, typer.Argument(help="Data set (class folders, Training/Testing, "
                                              "train/val/test or a MedMNIST .npz).")],
    against: Annotated[list[Path] | None, typer.Option(
        "--against", help="Another folder (e.g. a test set) to check for images of DATA; "
                          "repeat for several.")] = None,
    out: Annotated[Path | None, typer.Option(
        help="Folder for inspect.json and the contact sheets (PNG).")] = None,
    max_distance: Annotated[int, typer.Option(
        help="Near duplicates: most pHash bits that may differ (0..64).")] = DEFAULT_MAX_DISTANCE,
    min_correlation: Annotated[float, typer.Option(
        help="Near duplicates: least thumbnail correlation that confirms a pHash match.")]
        = DEFAULT_MIN_CORRELATION,
    workers: Annotated[int | None, typer.Option(
        help="Decoding processes (default: up to 8).")] = None,
    shortcuts: Annotated[bool, typer.Option(
        "--shortcuts/--no-shortcuts", help="Audit whether image size, format, colour, border, text, "
                                           "framing or head intensity alone predict the label.")] = True,
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
    json_out: Annotated[bool, typer.Option("--json", help="Print the full report as JSON.")]
        = False,
) -> None:
    """Duplicates, near duplicates, label conflicts, leakage, shortcuts and broken files, before training."""
    from mediscan.data.inspect import inspect_folder

    with user_errors():
        if not 0 <= max_distance <= 64:
            raise ValueError(f"--max-distance must be 0..64, got {max_distance}")
        report = inspect_folder(data, against=against or (), max_distance=max_distance,
                                min_correlation=min_correlation, workers=workers,
                                progress=progress, out=out, shortcuts=shortcuts)
    print_summary(report)
    if json_out:
        emit_json(report)


def print_summary(report: dict) -> None:
    """The report for people, on stderr."""
    console.print(_counts_table(report))
    sizes, files = report["sizes"], report["files"]
    common = ", ".join(f"{size} ({n})" for size, n in list(sizes["most_common"].items())[:3])
    types = ", ".join(f"{suffix} {entry['files']}" for suffix, entry in files["types"].items())
    console.print(f"{report['images']} images, {report['readable']} readable; "
                  f"{files['files']} files, {files['bytes'] / 1e6:.1f} MB "
                  f"({types}); "
                  f"{sizes['modes']['grey']} grey, {sizes['modes']['colour']} colour; "
                  f"{sizes['distinct']} sizes, most common {common}")
    _print_problems(report["problems"])
    _print_preprocessing(report.get("preprocessing"))
    console.print(_duplicates_table(report))
    _print_conflicts(report["label_conflicts"])
    for name, leak in (report["split_leakage"] or {}).items():
        _print_leak(f"split leakage, {name}", leak)
    for leak in report["against"]:
        _print_leak(f"leakage into {leak['root']}", leak)
        _print_against_labels(leak)
    if "shortcuts" in report:
        _print_shortcuts(report["shortcuts"])
    for name, path in report.get("sheets", {}).items():
        console.print(f"contact sheet ({name}): {path}")
    console.print(f"done in {report['seconds']['total']:.1f} s")


def _counts_table(report: dict) -> Table:
    table = Table(title=f"{report['root']}: images per class")
    table.add_column("split")
    for name in report["classes"]:
        table.add_column(name, justify="right")
    table.add_column("total", justify="right")
    table.add_column("max/min", justify="right")
    for split, counts in report["counts"].items():
        ratio = counts["imbalance_ratio"]
        table.add_row(split, *(str(n) for n in counts["per_class"].values()),
                      str(counts["total"]), "-" if ratio is None else f"{ratio:.2f}")
    return table


def _duplicates_table(report: dict) -> Table:
    exact, near = report["exact_duplicates"], report["near_duplicates"]
    table = Table(title="duplicates (max pHash distance "
                        f"{report['settings']['max_distance']}, min thumbnail correlation "
                        f"{report['settings']['min_correlation']})")
    for column in ("kind", "groups", "images in groups", "extra", "group sizes"):
        table.add_column(column)
    table.add_row("exact (identical pixels)", str(exact["groups"]), str(exact["images"]),
                  str(exact["extra_copies"]), _sizes(exact["size_distribution"]))
    table.add_row("near (resized, re-encoded, re-processed)", str(near["groups"]),
                  str(near["images"]), str(near["extra_images"]),
                  _sizes(near["size_distribution"]))
    table.caption = f"{report['unique_images']} unique images among {report['readable']} readable"
    return table


def _sizes(distribution: dict[str, int]) -> str:
    return ", ".join(f"{n}x{size}" for size, n in distribution.items()) or "-"


def _print_preprocessing(found: dict | None) -> None:
    if found:
        console.print(f"preprocessing `train` chooses from {found['images']} images "
                      f"({found['kind']}):")
        for reason in found["reasons"]:
            console.print(f"  {reason}")


def _print_problems(problems: dict) -> None:
    for entry in problems["unreadable"][:10]:
        console.print(f"[red]unreadable[/red] {entry['key']}: {entry['reason']}")
    for entry in problems["skipped"][:10]:
        console.print(f"[yellow]skipped[/yellow] {entry['path']}: {entry['reason']}")
    hidden = max(0, len(problems["unreadable"]) - 10) + max(0, len(problems["skipped"]) - 10)
    if hidden:
        console.print(f"... and {hidden} more (see --json or inspect.json)")


def _print_conflicts(conflicts: dict) -> None:
    if not conflicts["groups"]:
        console.print("label conflicts: none")
        return
    console.print(f"[red]label conflicts[/red]: {conflicts['groups']} group(s) of duplicates "
                  "carry different classes:")
    for item in conflicts["items"][:10]:
        console.print("  " + ", ".join(f"{m['key']}" for m in item["members"][:6]))


def _print_leak(title: str, leak: dict) -> None:
    colour = "red" if leak["images"] else "green"
    console.print(f"[{colour}]{title}[/{colour}]: {leak['images']} of {leak['of']} images "
                  f"duplicate earlier ones ({leak['exact']} exact, {leak['near_only']} near)")
    for example in leak["examples"][:3]:
        console.print(f"  {example['leaked']['key']} = {example['duplicate_of']['key']}")


def _print_against_labels(leak: dict) -> None:
    if leak["labels_comparable"]:
        console.print(f"  {leak['class_mismatches']} leaked image(s) carry another class than their match")
    else:
        console.print("  class names differ between the folders: class mismatches not counted")
    if "file" in leak:
        console.print(f"  every leaked file: {leak['file']}")


def _auc_cell(entry: dict, flagged: bool) -> str:
    ci = entry["ci"]
    text = f"{entry['auc']:.2f}" + (f" ({ci[0]:.2f}-{ci[1]:.2f})" if ci else "")
    return f"[red]{text}[/red]" if flagged else text


def _print_shortcuts(audit: dict) -> None:
    """AUC per property group and class, flagged cells in red, then the flag sentences."""
    if audit.get("skipped"):
        console.print(f"shortcut audit skipped: {audit['skipped']}")
        return
    classes = list(next(iter(audit["groups"].values()))["per_class"])
    flagged = {(f["group"], f["class"]) for f in audit["flags"]}
    table = Table(title="shortcut audit: AUC (95% CI) of label-irrelevant properties alone")
    for column in ("property", *classes, "overall"):
        table.add_column(column)
    for group, entry in audit["groups"].items():
        table.add_row(group, *(_auc_cell(entry["per_class"][c], (group, c) in flagged)
                                        for c in classes), _auc_cell(entry["overall"], False))
    legend = ", ".join(f"{group}: {entry['title']}" for group, entry in audit["groups"].items())
    table.caption = (f"{legend}. Flagged (red) when the interval's lower end is >= {audit['threshold']}; "
                     f"{audit['method']}")
    console.print(table)
    for flag in audit["flags"]:
        console.print(f"[red]shortcut[/red]: {flag['sentence']}")
    if not audit["flags"]:
        console.print("[green]shortcuts[/green]: no property alone separates a class far above chance")


def register(app: typer.Typer) -> None:
    app.command()(inspect)
