"""Progress bars for long work (Rich), silent when disabled or not on a terminal."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterable, Iterator, TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")
console = Console(stderr=True)


def make_progress(enabled: bool = True) -> Progress:
    """A Rich progress display on stderr (stdout stays clean for --json)."""
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"), TimeElapsedColumn(), TimeRemainingColumn(),
        console=console, disable=not enabled, transient=False,
    )


@contextmanager
def progress_bar(description: str, total: int, enabled: bool = True) -> Iterator:
    """Yield an `advance(n=1, status="")` callback bound to one progress bar."""
    with make_progress(enabled) as progress:
        task = progress.add_task(description, total=total, status="")

        def advance(n: int = 1, status: str = "") -> None:
            progress.update(task, advance=n, status=status)

        yield advance


def track(items: Iterable[T], description: str, total: int, enabled: bool = True) -> Iterator[T]:
    """Iterate with a progress bar."""
    with progress_bar(description, total, enabled) as advance:
        for item in items:
            yield item
            advance()
