"""Shared CLI plumbing: JSON output, actionable errors, duration parsing."""

from __future__ import annotations

import json
import re
import sys
from contextlib import contextmanager
from typing import Iterator

import typer

from mediscan.progress import console

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*$")


def parse_duration(text: str | None) -> float | None:
    """'90', '90s', '10m', '1.5h' -> seconds."""
    if text is None:
        return None
    match = _DURATION.match(text)
    if not match:
        raise typer.BadParameter(f"{text!r} is not a duration; use e.g. 600, 90s, 10m or 1h")
    value, unit = float(match.group(1)), match.group(2) or "s"
    return value * {"s": 1, "m": 60, "h": 3600}[unit]


def emit_json(payload: dict | list) -> None:
    """Machine-readable output on stdout (progress and summaries go to stderr)."""
    sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn expected errors into a one-line message and exit code 2, without a traceback."""
    from mediscan.bundle import BundleError
    from mediscan.data.readers import ImageReadError
    from mediscan.models import WeightsUnavailableError

    try:
        yield
    except (BundleError, ImageReadError, WeightsUnavailableError, ValueError, FileNotFoundError) as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from None
