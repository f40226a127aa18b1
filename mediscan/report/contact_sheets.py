"""Contact sheets for `mediscan inspect`: PNG grids of example images per finding
(samples per class, duplicate groups, label conflicts, leakage, shortcut flags)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageOps

from mediscan.data.folders import ImageFolder
from mediscan.data.hashing import Hashes, hamming, thumbnail_correlation
from mediscan.data.readers import ImageReadError

TILE = 128  # contact sheet tile, pixels
SHEET_COLUMNS = 8
SHEET_ROWS = 8
Tile = tuple[np.ndarray | None, str]


def write_sheets(out: Path, folders: list[ImageFolder], hashes: Hashes, owner: np.ndarray,
                 report: dict, seed: int = 0) -> dict[str, str]:
    """samples.png, duplicates.png, conflicts.png and leakage-K.png (when there is something)."""
    out.mkdir(parents=True, exist_ok=True)
    starts = np.cumsum([0, *(len(f) for f in folders)])
    position = {(k, s.key): int(starts[k] + i) for k, f in enumerate(folders)
                for i, s in enumerate(f.samples)}

    def read(index: int) -> np.ndarray | None:
        k = int(owner[index])
        try:
            return folders[k].read(index - int(starts[k]))
        except (ImageReadError, OSError, ValueError):
            return None

    rows = {"samples": sample_rows(folders[0], hashes.ok[:len(folders[0])], read, seed)}
    rows["duplicates"] = [_group_row(g, position, hashes, read) for g in _biggest(report)]
    rows["conflicts"] = [_group_row(g, position, hashes, read)
                         for g in report["label_conflicts"]["items"][:SHEET_ROWS]]
    for k, leak in enumerate(report["against"], start=1):
        rows[f"leakage-{k}"] = [_leak_row(e, k, position, read) for e in leak["examples"]]
    rows["shortcuts"] = [row for flag in strongest_per_class(report)[:SHEET_ROWS // 2]
                         for row in _shortcut_rows(flag, position, read)]
    written = {}
    for name, sheet_rows in rows.items():
        if sheet_rows:
            contact_sheet(sheet_rows, out / f"{name}.png")
            written[name] = str(out / f"{name}.png")
    return written


def sample_rows(folder: ImageFolder, ok: np.ndarray, read: Callable[[int], np.ndarray | None],
                seed: int) -> list[tuple[str, list[Tile]]]:
    """One row per class: up to SHEET_COLUMNS random readable images."""
    rng = np.random.default_rng(seed)
    rows = []
    for label, name in enumerate(folder.classes[:30]):
        members = np.flatnonzero((folder.labels == label) & ok)
        chosen = np.sort(rng.choice(members, min(SHEET_COLUMNS, len(members)), replace=False))
        rows.append((f"{name}: {len(members)} readable images, {len(chosen)} at random",
                     [(read(int(i)), folder.samples[i].path.name) for i in chosen]))
    return rows


def _biggest(report: dict) -> list[dict]:
    """The biggest exact and near duplicate groups, as member lists."""
    groups = [{"members": m} for m in report["exact_duplicates"]["examples"]]
    groups += report["near_duplicates"]["examples"]
    return sorted(groups, key=lambda g: -len(g["members"]))[:SHEET_ROWS]


def _group_row(group: dict, position: dict, hashes: Hashes,
               read: Callable[[int], np.ndarray | None]) -> tuple[str, list[Tile]]:
    """A duplicate group of DATA: each member with its distance and correlation to the first."""
    index = [position[(0, m["key"])] for m in group["members"]]
    first = index[0]
    distance = hamming(hashes.phash[index], hashes.phash[first]).reshape(-1)
    correlation = thumbnail_correlation(hashes.thumbs[index],
                                        np.repeat(hashes.thumbs[[first]], len(index), axis=0))
    classes = sorted({m["class"] for m in group["members"]})
    title = f"{len(index)} images, classes: {', '.join(classes)}"
    tiles = [(read(i), f"{m['class']}/{Path(m['key']).name}\nd={d} r={r:.3f}")
             for i, m, d, r in zip(index, group["members"], distance, correlation)]
    return title, tiles[:SHEET_COLUMNS]


def _leak_row(example: dict, k: int, position: dict,
              read: Callable[[int], np.ndarray | None]) -> tuple[str, list[Tile]]:
    leaked, source = example["leaked"], example["duplicate_of"]
    kind = "exact" if example["exact"] else f"d={example['distance']} r={example['correlation']}"
    return (f"{leaked['key']} duplicates {source['key']} ({kind})",
            [(read(position[(k, leaked["key"])]), f"other: {leaked['class']}"),
             (read(position[(0, source["key"])]), f"data: {source['class']}")])


def strongest_per_class(report: dict) -> list[dict]:
    """The shortcut audit's strongest flag of each flagged class, strongest first."""
    strongest: dict[str, dict] = {}
    for flag in (report.get("shortcuts") or {}).get("flags", []):  # sorted by AUC, highest first
        strongest.setdefault(flag["class"], flag)
    return list(strongest.values())


def _shortcut_rows(flag: dict, position: dict, read: Callable[[int], np.ndarray | None]
                   ) -> list[tuple[str, list[Tile]]]:
    """Two rows per flagged property: the class's most typical images, the rest's least like it."""
    def tiles(entries: list[dict]) -> list[Tile]:
        return [(read(position[(0, e["key"])]), f"{e['key']}\np={e['score']:.2f}") for e in entries]

    return [(f"{flag['sentence']}: most typical {flag['class']}", tiles(flag["typical"])),
            (f"other classes, least like {flag['class']} by {flag['group']}", tiles(flag["least_like"]))]


def contact_sheet(rows: list[tuple[str, list[Tile]]], path: Path, tile: int = TILE) -> Path:
    """A PNG grid: per row a title line, then tiles with a two-line caption under each."""
    pad, title_h, caption_h = 6, 14, 26
    columns = max(4, *(len(tiles) for _, tiles in rows))  # room for the titles
    row_h = title_h + tile + caption_h
    sheet = Image.new("RGB", (pad + columns * (tile + pad), pad + len(rows) * row_h), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (title, tiles) in enumerate(rows):
        y = pad + r * row_h
        draw.text((pad, y), title, fill=(0, 0, 0))
        for c, (pixels, caption) in enumerate(tiles):
            x = pad + c * (tile + pad)
            sheet.paste(_tile(pixels, tile), (x, y + title_h))
            draw.multiline_text((x, y + title_h + tile + 1), _fit(caption, tile),
                                fill=(160, 0, 0), spacing=1)
    sheet.save(path)
    return path


def _tile(pixels: np.ndarray | None, size: int) -> Image.Image:
    """The image fitted into a size x size square (grey with a cross when unreadable)."""
    canvas = Image.new("RGB", (size, size), (40, 40, 40))
    if pixels is None:
        draw = ImageDraw.Draw(canvas)
        draw.line((0, 0, size, size), fill=(200, 0, 0), width=2)
        draw.line((0, size, size, 0), fill=(200, 0, 0), width=2)
        return canvas
    image = ImageOps.contain(Image.fromarray(pixels).convert("RGB"), (size, size))
    canvas.paste(image, ((size - image.width) // 2, (size - image.height) // 2))
    return canvas


def _fit(caption: str, width: int) -> str:
    """Each caption line cut to what fits under a tile (about 6 pixels a character)."""
    limit = max(4, width // 6)
    return "\n".join(line if len(line) <= limit else line[:limit - 2] + ".."
                     for line in caption.splitlines()[:2])
