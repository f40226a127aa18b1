"""Shared CLI plumbing: JSON output, actionable errors and exit codes, option checks, durations.

Exit codes: 0 done; 1 done, but some inputs were skipped (`predict`); 2 usage or input errors
(a message, never a traceback); 130 interrupted (Ctrl-C)."""

from __future__ import annotations

import ipaddress
import json
import math
import os
import re
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Iterator, NoReturn

import typer

from mediscan.progress import console

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*$")
EXIT_SKIPPED, EXIT_ERROR, EXIT_INTERRUPTED = 1, 2, 130
TOKEN_ENV = "MEDISCAN_TOKEN"

Run = Annotated[Path, typer.Argument(help="Run folder written by `mediscan train`.")]
JsonOut = Annotated[bool, typer.Option("--json", help="Print JSON.")]
Device = Annotated[str | None, typer.Option(help="cpu, cuda or mps.")]
BACKEND_HELP = "torch, onnx (the run's model.onnx) or auto: onnx on a CPU when a current model.onnx is there."


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


def fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    """Print `error: message` on stderr and exit with `code` (no traceback)."""
    console.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(code)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn expected errors into a one-line message and exit code 2, without a traceback."""
    from mediscan.bundle import BundleError
    from mediscan.data.readers import ImageReadError
    from mediscan.models import WeightsUnavailableError

    try:
        yield
    except (BundleError, ImageReadError, WeightsUnavailableError, ValueError, FileNotFoundError) as error:
        fail(str(error))


def check_probability(value: float | None) -> float | None:
    """Typer callback for --abstain-below: a threshold in [0, 1) (nan refused), else usage error."""
    from mediscan.evaluation.calibration import check_abstain_threshold

    try:
        return None if value is None else check_abstain_threshold(value)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None


def parse_progressive(text: str | None) -> tuple[int, float] | None:
    """'96,0.7' -> (96, 0.7): progressive resizing from 96 px to full size at 70% of training;
    'off' -> (0, 0.0), which the schedule treats as always full size."""
    if text is None:
        return None
    if text.strip().lower() == "off":
        return (0, 0.0)
    try:
        start, until = text.split(",")
        start_px, until_share = int(start), float(until)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not START_PX,UNTIL; use e.g. 96,0.7 or off") from None
    if start_px < 16 or not 0.0 < until_share <= 1.0:
        raise typer.BadParameter(f"{text!r}: the start size must be >= 16 px and UNTIL a share in (0, 1]")
    return start_px, until_share


def check_share(value: float | None) -> float | None:
    """Typer callback for a share of images: a number in [0, 1] (nan refused), else usage error."""
    if value is not None and not 0.0 <= value <= 1.0:
        raise typer.BadParameter(f"must be a share between 0 and 1, got {value}")
    return value


def check_augment(value: str | None) -> str | None:
    """Typer callback: the name of an augmentation preset, else a usage error listing them."""
    from mediscan.augment import get_preset

    if value is not None:
        try:
            get_preset(value)
        except ValueError as error:
            raise typer.BadParameter(str(error)) from None
    return value


def check_positive(value: float) -> float:
    """Typer callback: a finite number > 0."""
    if not (math.isfinite(value) and value > 0):
        raise typer.BadParameter(f"must be a number > 0, got {value}")
    return value


def check_token(value: str | None) -> str | None:
    """Typer callback for --token/MEDISCAN_TOKEN: an empty token would turn auth off; refuse it."""
    if value is None and os.environ.get(TOKEN_ENV) is not None and not os.environ[TOKEN_ENV].strip():
        raise typer.BadParameter(f"{TOKEN_ENV} is set but empty; set a token, or unset {TOKEN_ENV} "
                                 "to serve without authentication")
    if value is not None and not value.strip():
        raise typer.BadParameter("the token is empty; give a token, or leave --token out to serve "
                                 "without authentication")
    return value


def check_file_name(value: str | None) -> str | None:
    """Typer callback for names that become file names: no path separators, no '..'."""
    if value is None:
        return None
    if not value.strip() or "/" in value or "\\" in value or ".." in value or value.startswith("."):
        raise typer.BadParameter(f"{value!r} is not a plain name (no '/', '\\', '..' or leading "
                                 "'.'); it names a file inside the run folder, e.g. 'site-b'")
    return value


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
