"""Run-folder files: atomic writes (a kill mid-write keeps the old file) and bounded JSON reads."""

from __future__ import annotations

import csv
import io
import json
import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

MAX_JSON_BYTES = 16 * 2**20  # far above anything mediscan writes (model.json of 100k skipped files)
MAX_JSON_DEPTH = 32  # mediscan's own files nest at most 6 deep


class BadFileError(ValueError):
    """A file that cannot be read as what it should be; the message names it and the fix."""


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A fresh path beside `path` to write to; on success it is fsynced and renamed over `path`.

    Readers see the old file or the complete new one, never a partial one; on an error the
    temporary file is removed and `path` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.stem}.{secrets.token_hex(4)}.tmp{path.suffix}"
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if os.name == "posix":  # the rename itself is durable once the folder is synced
        _fsync(path.parent)


def write_atomic(path: str | Path, data: str | bytes) -> Path:
    """Write text (UTF-8) or bytes to `path` atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return Path(path)


def write_json(path: str | Path, payload: Any, **dumps_options) -> Path:
    """`json.dumps(payload, indent=2, **dumps_options)` written atomically."""
    return write_atomic(path, json.dumps(payload, **{"indent": 2, **dumps_options}))


def _depth(value: Any) -> int:
    """Nesting depth of parsed JSON (iterative, so any depth is safe to measure)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        stack.extend((child, level + 1) for child in children)
    return deepest


def read_json(path: str | Path, *, fix: str, max_bytes: int = MAX_JSON_BYTES,
              max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Parse a JSON file of bounded size and nesting; BadFileError says what was wrong and `fix`."""
    path = Path(path)
    if not path.is_file():
        raise BadFileError(f"{path}: missing; {fix}")
    size = path.stat().st_size
    if size > max_bytes:
        raise BadFileError(f"{path}: {size:,} bytes, more than the {max_bytes:,} allowed; {fix}")
    try:
        value = json.loads(path.read_bytes())
    except RecursionError:
        raise BadFileError(f"{path}: JSON nested too deeply; {fix}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BadFileError(f"{path}: not valid JSON ({error}); {fix}") from None
    if _depth(value) > max_depth:
        raise BadFileError(f"{path}: JSON nested more than {max_depth} levels deep; {fix}")
    return value


def write_csv(path: str | Path, header: Sequence[str], rows: Iterable[Sequence]) -> Path:
    """Write a CSV table (header, then rows) atomically."""
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(header)
    writer.writerows(rows)
    return write_atomic(path, text.getvalue())


def read_csv(path: str | Path) -> list[dict[str, str]]:
    """The rows of a CSV table as dicts of strings, keyed by its header."""
    with Path(path).open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))
