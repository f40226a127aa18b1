"""Small helpers shared by the bench scripts: the command line, tables, JSON, memory, machine."""

from __future__ import annotations

import json
import os
import platform
import resource
import shlex
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

MIB = 2**20


def command_line() -> str:
    """The exact command that started this process, ready to paste into a shell."""
    return shlex.join([Path(sys.executable).name, *sys.argv])


def machine() -> dict:
    """What this ran on: CPU cores, RAM, Python, torch and the accelerator if any."""
    import torch

    info = {"cpu_cores": os.cpu_count(), "ram_gib": round(physical_ram() / 2**30, 1),
            "python": platform.python_version(), "torch": torch.__version__, "gpu": None}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def physical_ram() -> int:
    """Bytes of RAM on this machine."""
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def peak_rss_mib(who: int = resource.RUSAGE_SELF) -> float:
    """Peak resident set size of this process (or of its waited-for children), MiB (Linux: KiB)."""
    return resource.getrusage(who).ru_maxrss / 1024


def rss_now_mib() -> dict[str, float]:
    """Current VmRSS and its anonymous and file-backed parts (MiB) from /proc/self/status."""
    fields = {"VmRSS": "rss", "RssAnon": "anon", "RssFile": "file"}
    values = {name: 0.0 for name in fields.values()}
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in fields:
                values[fields[key]] = int(rest.split()[0]) / 1024
    return values


def fmt(value: float | None, spec: str = ".1f", missing: str = "-") -> str:
    """A number formatted with `spec`, or `missing` for None."""
    return missing if value is None else format(value, spec)


def fmt_ci(entry: dict | None, scale: float = 100.0) -> str:
    """'95.3 (93.3-96.8)' from {"value": v, "ci": [lo, hi]} (percent by default)."""
    if not entry or entry.get("value") is None:
        return "-"
    text = f"{entry['value'] * scale:.1f}"
    ci = entry.get("ci")
    return text + (f" ({ci[0] * scale:.1f}-{ci[1] * scale:.1f})" if ci else "")


def table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table with a header line, columns padded to their widest cell."""
    cells = [list(columns), *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def announce(json_only: bool) -> str:
    """Print the command line first (unless --json) and return it for the JSON result."""
    command = command_line()
    if not json_only:
        print(f"command: {command}", flush=True)
    return command


def emit(result: dict, *, json_only: bool, text: str = "") -> None:
    """Print the human text then one JSON line, or the JSON line alone with --json."""
    if text and not json_only:
        print(text)
    print(json.dumps(result, default=_jsonable), flush=True)


def _jsonable(value):
    """JSON fallback for paths and numpy scalars."""
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def log(message: str) -> None:
    """A progress line on stderr (stdout stays the table and the JSON line)."""
    print(message, file=sys.stderr, flush=True)


@contextmanager
def scratch_dir(prefix: str, parent: str | Path | None = None, keep: bool = False) -> Iterator[Path]:
    """A temporary folder for one benchmark, removed afterwards unless `keep` (then logged)."""
    work = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        yield work
    finally:
        if keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
