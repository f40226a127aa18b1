"""Decode any supported image to uint8 pixels: HxW for grey sources, HxWx3 for colour sources.

One reader for every path (train, evaluate, predict, serve), so they all see identical pixels:

- PIL formats (JPEG, PNG, BMP, TIFF, GIF, WebP) in any mode; EXIF orientation applied; alpha
  composited on black; palette images come out grey when their colours are grey; 16/32-bit and
  float images scaled by their min..max. Multi-page files: `index` = page (default the first).
- DICOM (pydicom): rescale slope/intercept, the file's window (or `window=(centre, width)`),
  MONOCHROME1 inverted, `index` = frame (default the middle one), RGB and palette colour.
- NIfTI (nibabel): the slice `index` (default the middle one) along the last stored spatial axis
  (the first volume of 4-D data), turned with `np.rot90` so that an axial slice of RAS-stored
  data shows anterior at the top, as viewers do. The affine is not applied otherwise. The
  header's cal_min/cal_max, when set, act as the window.

Data that is not 8-bit goes through `to_uint8`: a window if given, else min..max of the image.

Uploads are decoded within a `DecodeBudget` (pixels per frame, frames, decompressed bytes), checked
from the headers before any pixel data is decompressed, so a small file cannot make the server
allocate or decompress gigabytes. Files given by path must be regular files (never a FIFO).
"""

from __future__ import annotations

import gzip
import importlib
import io
import math
import os
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

PIL_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".gif", ".webp"})
DICOM_SUFFIXES = frozenset({".dcm", ".dicom"})
NIFTI_SUFFIXES = frozenset({".nii", ".nii.gz"})
IMAGE_SUFFIXES = PIL_SUFFIXES | DICOM_SUFFIXES | NIFTI_SUFFIXES
VOLUME_SUFFIXES = DICOM_SUFFIXES | NIFTI_SUFFIXES  # files that may hold several frames/slices
PIL_FORMATS = ("JPEG", "PNG", "BMP", "DIB", "TIFF", "GIF", "WEBP")  # nothing else is opened
DEFAULT_MAX_PIXELS = 40_000_000  # uploads; files on disk get PIL's own limit unless told
DEFAULT_MAX_FRAMES = 4096  # frames or slices an upload may declare
DEFAULT_MAX_BYTES = 256 * 2**20  # decompressed bytes an upload may need (a NIfTI volume, a frame)
DEFAULT_REDUCE_TO = 2048 * 2048  # uploads over this many pixels are box-reduced while decoding
HEAD_BYTES = 348  # enough for the DICOM preamble (128 + "DICM") and a NIfTI-1 header

_HIGH_DEPTH_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})
_DAMAGED = "the file is damaged or incomplete; re-export or remove it"
_NOT_AN_IMAGE = ("not a recognised image (expected JPEG, PNG, BMP, TIFF, GIF, WebP, DICOM or "
                 "NIfTI; check that the file really is one, or remove it)")

Window = tuple[float, float]
Source = Path | BinaryIO


@dataclass(frozen=True)
class DecodeBudget:
    """What one decode may cost; None = no limit. Checked from headers, before decompressing.

    `max_pixels` per frame, `max_frames` declared by a DICOM/NIfTI/multi-page file, `max_bytes`
    of decompressed data (a NIfTI volume, a DICOM frame, a PIL frame), and `reduce_to`: larger
    images are reduced by the smallest integer factor that brings them under that many pixels
    (JPEG decodes at the reduced scale; other formats are box-averaged right after decoding)."""

    max_pixels: int | None = DEFAULT_MAX_PIXELS
    max_frames: int | None = DEFAULT_MAX_FRAMES
    max_bytes: int | None = DEFAULT_MAX_BYTES
    reduce_to: int | None = DEFAULT_REDUCE_TO


UPLOAD_BUDGET = DecodeBudget()


class ImageReadError(ValueError):
    """An image that cannot be decoded; `str(e)` names the file, what was wrong and what to do."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.path, self.reason)


class _Unreadable(Exception):
    """Raised inside the decoders with a reason; `_named` adds the file name."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --- public entry points ----------------------------------------------------------------------

def read_image(path: str | os.PathLike[str], *, index: int | None = None,
               window: Window | None = None, max_pixels: int | None = None) -> np.ndarray:
    """Decode an image file to uint8 HxW (grey) or HxWx3 (colour); raises ImageReadError."""
    path = Path(path)
    _check_window(window)
    budget = DecodeBudget(max_pixels=max_pixels, max_frames=None, max_bytes=None, reduce_to=None)
    with _named(path):
        head = _head(path)
        return _DECODERS[_kind(path.name, head)](path, index, window, budget)


def read_image_bytes(data: bytes, *, name: str = "upload", index: int | None = None,
                     window: Window | None = None,
                     budget: DecodeBudget = UPLOAD_BUDGET) -> np.ndarray:
    """Decode an image held in memory (an upload) like `read_image`, within `budget`."""
    _check_window(window)
    with _named(name):
        if not data:
            raise _Unreadable("the upload is empty (0 bytes; send the image file itself)")
        return _DECODERS[_kind(name, data[:HEAD_BYTES])](io.BytesIO(data), index, window, budget)


def count_frames(path: str | os.PathLike[str]) -> int:
    """Frames of a DICOM, slices of a NIfTI volume, pages of a TIFF/GIF; 1 for a plain image."""
    path = Path(path)
    with _named(path):
        kind = _kind(path.name, _head(path))
        if kind == "nifti":
            return _nifti_axes(_load_nifti(path).shape)[1]
        if kind == "dicom":
            return _dicom_frame_count(_read_dicom(path, stop_before_pixels=True))
        with Image.open(path, formats=PIL_FORMATS) as image:
            return int(getattr(image, "n_frames", 1))


def not_a_regular_file(path: str | os.PathLike[str]) -> str | None:
    """Why `path` cannot be read as an image file without opening it, or None for a regular file.

    Names symbolic link loops, dangling links, FIFOs (which would block a reader), sockets and
    devices; never opens the path."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if os.path.islink(path):
            return f"dangling symbolic link (points to {os.readlink(path)}, which does not exist)"
        return "no such file or folder"
    except OSError as error:
        if error.errno == 40 or "symbolic links" in str(error):  # ELOOP
            return "symbolic link loop (the link points back to itself; fix or remove it)"
        return f"cannot be read ({error.strerror or error})"
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    kind = "FIFO (named pipe)" if stat.S_ISFIFO(mode) else \
        "socket" if stat.S_ISSOCK(mode) else "device"
    return f"is a {kind}, not an image file (only regular files are read)"


def suffix_of(path: str | os.PathLike[str]) -> str:
    """The lower-case suffix of a file name, with '.nii.gz' counted as one suffix."""
    name = os.path.basename(path).lower()
    return ".nii.gz" if name.endswith(".nii.gz") else os.path.splitext(name)[1]


def has_dicom_preamble(path: str | os.PathLike[str]) -> bool:
    """True when the file carries the DICOM preamble ('DICM' at byte 128)."""
    try:
        with open(path, "rb") as file:
            return _is_dicom_head(file.read(132))
    except OSError:
        return False


def may_be_dicom_name(path: str | os.PathLike[str]) -> bool:
    """DICOM files often have no suffix, a numeric one (UID-style names) or '.ima': sniff those."""
    suffix = suffix_of(path)
    return suffix == "" or suffix[1:].isdigit() or suffix == ".ima"


def looks_like_image(path: str | os.PathLike[str]) -> bool:
    """True for a known image suffix, or a DICOM file without one (sniffed: 132 bytes read)."""
    if suffix_of(path) in IMAGE_SUFFIXES:
        return True
    return may_be_dicom_name(path) and os.path.isfile(path) and has_dicom_preamble(path)


def to_uint8(values: np.ndarray, window: Window | None = None) -> np.ndarray:
    """uint8 pixels via `window=(centre, width)`; without one, uint8 as is, else min..max -> 0..255."""
    values = np.asarray(values)
    if window is None and values.dtype == np.uint8:  # a fresh, writable, C-ordered array
        writable = values.flags.writeable and values.flags.c_contiguous and values.base is None
        return values if writable else np.array(values, order="C")
    data = values.astype(np.float32)
    if window is not None:
        low, high = window[0] - window[1] / 2, window[0] + window[1] / 2
    else:
        finite = data[np.isfinite(data)] if data.dtype.kind == "f" else data
        low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    scale = 255.0 / (high - low) if high > low else 0.0
    data -= low
    data *= scale
    np.nan_to_num(data, copy=False, nan=0.0, posinf=255.0, neginf=0.0)
    return np.clip(np.rint(data), 0, 255).astype(np.uint8)


# --- dispatch and errors ----------------------------------------------------------------------

@contextmanager
def _named(name: str | os.PathLike[str]) -> Iterator[None]:
    """Turn any failure inside the block into an ImageReadError that names `name`."""
    try:
        yield
    except ImageReadError:
        raise
    except _Unreadable as problem:
        raise ImageReadError(name, problem.reason) from problem.__cause__
    except Exception as error:  # decoders raise many types: OSError, SyntaxError, struct.error...
        raise ImageReadError(name, _explain(error)) from error


def _explain(error: Exception) -> str:
    """A short reason, with what to do, for an exception raised while decoding."""
    if isinstance(error, FileNotFoundError):
        return "no such file (check the path)"
    if isinstance(error, IsADirectoryError):
        return "is a folder, not an image file"
    if isinstance(error, PermissionError):
        return "permission denied (check the file's permissions)"
    if isinstance(error, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return f"image is too large to decode safely ({error}); downscale it first"
    if isinstance(error, UnidentifiedImageError):
        return _NOT_AN_IMAGE
    if isinstance(error, MemoryError):
        return "not enough memory to decode this image (downscale it first)"
    text = _one_line(error)
    if isinstance(error, EOFError) or "truncated" in text.lower():
        return f"image file is truncated ({_DAMAGED})"
    return f"could not be decoded ({text}; {_DAMAGED})"


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _check_window(window: Window | None) -> None:
    if window is not None and not (len(window) == 2 and np.isfinite(window).all() and window[1] > 0):
        raise ValueError(f"window must be (centre, width) with width > 0, got {window!r}")


def _head(path: Path) -> bytes:
    """The first bytes of a regular file (checked before opening), refusing an empty one."""
    problem = not_a_regular_file(path)
    if problem is not None and problem != "no such file or folder":
        raise _Unreadable(problem)
    with open(path, "rb") as file:
        head = file.read(HEAD_BYTES)
    if not head:
        raise _Unreadable("the file is empty (0 bytes; re-export or remove it)")
    return head


def _is_dicom_head(head: bytes) -> bool:
    return bytes(head[128:132]) == b"DICM"


def _kind(name: str, head: bytes) -> str:
    """'nifti', 'dicom' or 'pil', from the name's suffix and the file's first bytes."""
    suffix = suffix_of(name)
    if suffix in NIFTI_SUFFIXES or bytes(head[344:348]) == b"n+1\0":
        return "nifti"
    if suffix in DICOM_SUFFIXES or _is_dicom_head(head):
        return "dicom"
    return "pil"


def _pick(index: int | None, count: int, what: str, default: int) -> int:
    """The frame/slice to read: `index`, or `default` when None; out of range is an error."""
    if index is None:
        return default
    if not 0 <= index < count:
        plural = "" if count == 1 else "s"
        raise _Unreadable(f"{what} {index} is out of range (the file has {count} {what}{plural}: "
                          f"use 0..{count - 1})")
    return int(index)


def _check_size(width: int, height: int, max_pixels: int | None) -> None:
    """Refuse dimensions over the limit before any pixel is decoded (decompression bombs)."""
    limit = Image.MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    if limit is not None and width * height > limit:
        raise _Unreadable(f"image is too large ({width}x{height} = {width * height:,} pixels, "
                          f"limit {limit:,}); downscale it first")


def _check_budget(budget: DecodeBudget, *, frames: int, nbytes: int, what: str) -> None:
    """Refuse a file whose header declares more frames or decompressed bytes than the budget."""
    if budget.max_frames is not None and frames > budget.max_frames:
        raise _Unreadable(f"{what} declares {frames:,} frames/slices, more than the limit of "
                          f"{budget.max_frames:,}; send a single slice or a smaller file")
    if budget.max_bytes is not None and nbytes > budget.max_bytes:
        raise _Unreadable(f"{what} declares {nbytes / 2**20:,.0f} MiB of pixel data, more than the "
                          f"limit of {budget.max_bytes / 2**20:,.0f} MiB; send a single slice "
                          "(PNG or DICOM) or a smaller volume")


def _need(module: str, what: str) -> Any:
    """Import an optional decoder lazily, with install advice when it is missing."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise _Unreadable(f"reading {what} needs the {module} package (pip install {module})") \
            from error


# --- PIL --------------------------------------------------------------------------------------

def _decode_pil(source: Source, index: int | None, window: Window | None,
                budget: DecodeBudget) -> np.ndarray:
    with Image.open(source, formats=PIL_FORMATS) as image:
        _check_size(image.width, image.height, budget.max_pixels)
        if index is not None:  # counting frames decodes every GIF frame: only when asked
            image.seek(_pick(index, getattr(image, "n_frames", 1), "frame", 0))
        depth = 4 if image.mode in _HIGH_DEPTH_MODES else 1
        _check_budget(budget, frames=1, what="the image",
                      nbytes=image.width * image.height * len(image.getbands()) * depth)
        factor = _reduce_factor(image.width, image.height, budget.reduce_to)
        if factor > 1:
            image.draft(image.mode, (image.width // factor, image.height // factor))  # JPEG
        image.load()
        ImageOps.exif_transpose(image, in_place=True)
        return to_uint8(_pil_array(_reduced(image, budget.reduce_to)), window)


_REDUCIBLE_AS = {"1": "L", "P": "RGBA", "I;16": "I", "I;16L": "I", "I;16B": "I", "I;16N": "I"}


def _reduce_factor(width: int, height: int, reduce_to: int | None) -> int:
    """The smallest integer factor that brings width x height within `reduce_to` pixels."""
    if reduce_to is None or width * height <= reduce_to:
        return 1
    return math.ceil(math.sqrt(width * height / reduce_to))


def _reduced(image: Image.Image, reduce_to: int | None) -> Image.Image:
    """`image` box-averaged by `_reduce_factor` (modes PIL cannot reduce are converted first)."""
    factor = _reduce_factor(image.width, image.height, reduce_to)
    if factor == 1:
        return image
    return image.convert(_REDUCIBLE_AS.get(image.mode, image.mode)).reduce(factor)


def _pil_array(image: Image.Image) -> np.ndarray:
    """The pixels of any PIL mode: grey HxW, colour HxWx3, or HxW 16/32-bit/float values."""
    mode = image.mode
    if mode in _HIGH_DEPTH_MODES or mode in ("L", "RGB"):
        return np.asarray(image)
    if mode in ("P", "PA"):
        rgb = _composite(np.asarray(image.convert("RGBA")))
        grey = (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()
        return np.ascontiguousarray(rgb[..., 0]) if grey else rgb
    if mode == "1":
        return np.asarray(image.convert("L"))
    if mode in ("LA", "La"):
        return _composite(np.asarray(image.convert("LA")))
    if mode in ("RGBA", "RGBa"):
        return _composite(np.asarray(image.convert("RGBA")))
    return np.asarray(image.convert("RGB"))  # RGBX, CMYK, YCbCr, LAB, HSV


def _composite(pixels: np.ndarray) -> np.ndarray:
    """Colour channels composited on black by the last (alpha) channel; one channel -> HxW."""
    colour, alpha = pixels[..., :-1].astype(np.uint16), pixels[..., -1:].astype(np.uint16)
    out = ((colour * alpha + 127) // 255).astype(np.uint8)
    return out[..., 0] if out.shape[-1] == 1 else out


# --- DICOM ------------------------------------------------------------------------------------

def _decode_dicom(source: Source, index: int | None, window: Window | None,
                  budget: DecodeBudget) -> np.ndarray:
    ds = _read_dicom(source)
    _check_size(int(ds.Columns), int(ds.Rows), budget.max_pixels)
    count = _dicom_frame_count(ds)
    frame_bytes = int(ds.Columns) * int(ds.Rows) * int(ds.get("SamplesPerPixel") or 1) * \
        max(1, int(ds.get("BitsAllocated") or 8) // 8)
    _check_budget(budget, frames=count, nbytes=frame_bytes, what="the DICOM file")
    pixels = _dicom_pixels(ds, _pick(index, count, "frame", count // 2))
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        pixels = apply_color_lut(pixels, ds)
    elif int(ds.get("SamplesPerPixel", 1)) == 1:
        pixels, window = _dicom_grey_values(ds, pixels, window)
    image = to_uint8(pixels, window)
    return 255 - image if photometric == "MONOCHROME1" else image


def _read_dicom(source: Source, **kwargs: Any) -> Any:
    """The dataset (pixel data required unless stop_before_pixels), encoding made explicit."""
    pydicom = _need("pydicom", "DICOM files")
    try:
        ds = pydicom.dcmread(source, force=True, **kwargs)
    except Exception as error:
        raise _Unreadable(f"not a readable DICOM file ({_one_line(error)}; {_DAMAGED})") \
            from error
    if not kwargs.get("stop_before_pixels") and not any(
            tag in ds for tag in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise _Unreadable("no pixel data in this DICOM (the file is damaged, or it is not an "
                          "image but e.g. a report or DICOMDIR; re-export or remove it)")
    if "TransferSyntaxUID" not in ds.file_meta:  # a bare dataset without file meta information
        from pydicom import uid

        implicit, little = ds.original_encoding
        ds.file_meta.TransferSyntaxUID = (uid.ImplicitVRLittleEndian if implicit else
                                          uid.ExplicitVRLittleEndian if little else
                                          uid.ExplicitVRBigEndian)
    return ds


def _dicom_frame_count(ds: Any) -> int:
    return max(1, int(ds.get("NumberOfFrames") or 1))


def _dicom_pixels(ds: Any, frame: int) -> np.ndarray:
    """One decoded frame; a compressed syntax without an installed decoder says what to install."""
    from pydicom.pixels import get_decoder, pixel_array

    syntax = ds.file_meta.TransferSyntaxUID
    if syntax.is_compressed:
        try:
            available = get_decoder(syntax).is_available
        except NotImplementedError:
            available = False
        if not available:
            raise _Unreadable(f"compressed DICOM ({syntax.name}) needs a decoder that is not "
                              f"installed: pip install {_decoder_packages(syntax.name)}")
    try:
        return pixel_array(ds, index=frame)
    except Exception as error:
        if not syntax.is_compressed:
            raise
        raise _Unreadable(f"compressed pixel data ({syntax.name}) could not be decoded "
                          f"({_one_line(error)}; {_DAMAGED})") from error


def _decoder_packages(syntax_name: str) -> str:
    """The pip packages that let pydicom decode a compressed transfer syntax."""
    if "2000" in syntax_name:
        return "pylibjpeg pylibjpeg-openjpeg"
    if "RLE" in syntax_name:
        return "pylibjpeg pylibjpeg-rle"
    return "pylibjpeg pylibjpeg-libjpeg"


def _dicom_grey_values(ds: Any, pixels: np.ndarray,
                       window: Window | None) -> tuple[np.ndarray, Window | None]:
    """Modality values (slope/intercept or LUT) and the window to show them through."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    values = apply_modality_lut(pixels, ds)
    window = window or _dicom_window(ds)
    if window is None and "VOILUTSequence" in ds:
        values = apply_voi_lut(values, ds)
    return values, window


def _dicom_window(ds: Any) -> Window | None:
    """The file's first (centre, width) window, when it has a usable one."""
    centre, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if centre is None or width is None:
        return None
    centre, width = (float(v[0]) if hasattr(v, "__getitem__") else float(v)  # MultiValue
                     for v in (centre, width))
    return (centre, width) if width > 0 and np.isfinite(centre) else None


# --- NIfTI ------------------------------------------------------------------------------------

def _decode_nifti(source: Source, index: int | None, window: Window | None,
                  budget: DecodeBudget) -> np.ndarray:
    image = _load_nifti(source, budget.max_bytes)
    where, count = _nifti_axes(image.shape)
    rows, columns = (image.shape[axis] for axis, part in enumerate(where) if part is _ALL)
    _check_size(columns, rows, budget.max_pixels)
    _check_budget(budget, frames=count, nbytes=_nifti_data_end(image.header), what="the NIfTI file")
    chosen = _pick(index, count, "slice", count // 2)
    where = tuple(chosen if part is _SLICE else part for part in where)
    values = np.asarray(image.dataobj[where])
    return to_uint8(np.rot90(values), window or _nifti_window(image.header))


_ALL, _SLICE = slice(None), "slice"


def _nifti_axes(shape: tuple[int, ...]) -> tuple[tuple[Any, ...], int]:
    """How to index one 2-D slice: the first two non-singleton spatial axes whole, the third
    (if any) marked _SLICE, everything else 0 (first volume); plus the number of slices."""
    spatial = [axis for axis in range(min(3, len(shape))) if shape[axis] > 1]
    if len(spatial) < 2:
        raise _Unreadable(f"NIfTI data of shape {tuple(shape)} is not an image (it needs two "
                          "spatial axes longer than 1)")
    where: list[Any] = [0] * len(shape)
    for axis in spatial[:2]:
        where[axis] = _ALL
    if len(spatial) == 3:
        where[spatial[2]] = _SLICE
        return tuple(where), int(shape[spatial[2]])
    return tuple(where), 1


def _load_nifti(source: Source, max_bytes: int | None = None) -> Any:
    """A lazily read NIfTI image from a path or an in-memory (optionally gzipped) stream; a gzip
    stream is never decompressed past `max_bytes` (plus the header)."""
    nib = _need("nibabel", "NIfTI files")
    if isinstance(source, Path):
        return nib.load(source)
    magic = source.read(2)
    source.seek(0)
    if magic == b"\x1f\x8b":
        cap = None if max_bytes is None else max_bytes + HEAD_BYTES
        source = _CappedGzip(source, cap)
    holder = nib.FileHolder(fileobj=source)
    return nib.Nifti1Image.from_file_map({"header": holder, "image": holder})


def _nifti_data_end(header: Any) -> int:
    """Where the header says the pixel data ends: its offset plus every voxel of every volume."""
    voxels = math.prod(int(n) for n in header.get_data_shape())
    return int(header.get_data_offset()) + voxels * header.get_data_dtype().itemsize


class _CappedGzip(gzip.GzipFile):
    """A gzip stream that refuses to decompress more than `cap` bytes (None: no cap)."""

    def __init__(self, fileobj: BinaryIO, cap: int | None) -> None:
        super().__init__(fileobj=fileobj, mode="rb")
        self.cap = cap

    def _refuse_past(self, position: int) -> None:
        if self.cap is not None and position > self.cap:
            raise _Unreadable(f"the gzip stream decompresses to more than {self.cap / 2**20:,.0f} "
                              "MiB; send a single slice (PNG or DICOM) or a smaller volume")

    def _position(self) -> int:
        return super().seek(0, io.SEEK_CUR)  # IOBase.tell() would call our seek

    def read(self, size: int | None = -1) -> bytes:
        if self.cap is not None and (size is None or size < 0):
            size = self.cap - self._position() + 1
        self._refuse_past(self._position() + (size or 0) - 1)
        return super().read(size)

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[:len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence != io.SEEK_CUR or offset:
            self._refuse_past(offset if whence == io.SEEK_SET else self._position() + offset)
        return super().seek(offset, whence)


def _nifti_window(header: Any) -> Window | None:
    """The header's display range (cal_min..cal_max) as a window, when it is set."""
    try:
        low, high = float(header["cal_min"]), float(header["cal_max"])
    except (KeyError, ValueError, TypeError):
        return None
    return ((low + high) / 2, high - low) if high > low else None


_DECODERS: dict[str, Callable[[Source, int | None, Window | None, DecodeBudget], np.ndarray]] = {
    "pil": _decode_pil, "dicom": _decode_dicom, "nifti": _decode_nifti}
