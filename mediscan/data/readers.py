"""Read any 2-D medical image into uint8: PIL formats in every mode, DICOM (pydicom), NIfTI (nibabel).

`read_image(path)` returns H x W for greyscale sources and H x W x 3 for colour ones.
16-bit, 32-bit and float data are scaled to 8 bit; DICOM gets its rescale slope/intercept,
its window (from the file, or `window=(centre, width)`) and MONOCHROME1 inversion.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

PIL_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".gif", ".webp"})
DICOM_SUFFIXES = frozenset({".dcm", ".dicom"})
NIFTI_SUFFIXES = frozenset({".nii", ".nii.gz"})
IMAGE_SUFFIXES = PIL_SUFFIXES | DICOM_SUFFIXES | NIFTI_SUFFIXES
DEFAULT_MAX_PIXELS = 40_000_000


class ImageReadError(ValueError):
    """A file that cannot be read as an image; the message names it and says what to do."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path, self.reason = Path(path), reason
        super().__init__(f"{path}: {reason}")


def suffix_of(path: Path) -> str:
    """Lower-case suffix, with .nii.gz kept whole."""
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def has_dicom_preamble(path: Path) -> bool:
    """True for files with 'DICM' at byte 128 (extension-less DICOM included)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def looks_like_image(path: str | Path) -> bool:
    """By suffix, or by the DICOM preamble for files without a known suffix."""
    path = Path(path)
    suffix = suffix_of(path)
    if suffix in IMAGE_SUFFIXES:
        return True
    return suffix in ("", ".ima") and has_dicom_preamble(path)


def to_uint8(array: np.ndarray, low: float | None = None, high: float | None = None) -> np.ndarray:
    """Linearly map [low, high] (default: the data's min..max) to 0..255."""
    data = np.asarray(array, dtype=np.float64)
    finite = data[np.isfinite(data)]
    if finite.size == 0:
        return np.zeros(data.shape, dtype=np.uint8)
    low = float(finite.min()) if low is None else low
    high = float(finite.max()) if high is None else high
    if high <= low:
        return np.zeros(data.shape, dtype=np.uint8)
    scaled = (np.nan_to_num(data, nan=low) - low) * (255.0 / (high - low))
    return np.clip(scaled + 0.5, 0, 255).astype(np.uint8)


def _pil_to_array(image: Image.Image) -> np.ndarray:
    """Any PIL mode -> uint8 H x W (grey) or H x W x 3 (colour); alpha composited on black."""
    image = ImageOps.exif_transpose(image) or image
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return to_uint8(np.asarray(image))
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        background = Image.new("RGB" if mode.startswith(("RGB", "P")) else "L", image.size)
        background.paste(image.convert(background.mode), mask=image.getchannel("A"))
        image = background
    elif mode in ("1", "L"):
        image = image.convert("L")
    elif mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image)


def _open_pil(source: Path | BinaryIO, name: str | Path, max_pixels: int, index: int | None) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(source) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise ImageReadError(name, f"{width}x{height} pixels is more than the "
                                         f"{max_pixels:,} allowed (a decompression bomb?)")
                if index is not None:
                    image.seek(index)
                image.load()
                return _pil_to_array(image)
        except ImageReadError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            raise ImageReadError(name, f"refused: {error}") from None
        except UnidentifiedImageError:
            raise ImageReadError(name, "not an image PIL can decode (wrong extension or a "
                                 "different file type); convert it to PNG/JPEG or remove it") from None
        except (OSError, SyntaxError, ValueError, EOFError) as error:
            raise ImageReadError(name, f"{error} (the file is damaged or incomplete; re-export "
                                 "or remove it)") from None


def _dicom_window(ds, window: tuple[float, float] | None) -> tuple[float, float] | None:
    if window is not None:
        return window
    centre, width = getattr(ds, "WindowCenter", None), getattr(ds, "WindowWidth", None)
    if centre is None or width is None:
        return None
    first = lambda value: float(value[0] if hasattr(value, "__len__") and not isinstance(value, str) else value)  # noqa: E731
    return first(centre), first(width)


def _dicom_pixels(ds, name: str | Path) -> np.ndarray:
    try:
        return ds.pixel_array
    except Exception as error:  # pydicom raises many types for missing decoders / bad data
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        label = getattr(syntax, "name", str(syntax))
        hint = ("install a decoder: pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg"
                if syntax is not None and getattr(syntax, "is_compressed", False)
                else "the pixel data is damaged or missing")
        raise ImageReadError(name, f"DICOM pixel data ({label}) could not be decoded: {error}; "
                             f"{hint}") from None


def _dicom_to_array(ds, name: str | Path, index: int | None,
                    window: tuple[float, float] | None) -> np.ndarray:
    from pydicom.pixels import apply_modality_lut

    pixels = _dicom_pixels(ds, name)
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if frames > 1:
        pixels = pixels[frames // 2 if index is None else index]
    if getattr(ds, "PhotometricInterpretation", "MONOCHROME2") in ("RGB", "YBR_FULL", "YBR_FULL_422"):
        return to_uint8(pixels) if pixels.dtype != np.uint8 else pixels
    values = apply_modality_lut(pixels, ds).astype(np.float64)
    chosen = _dicom_window(ds, window)
    if chosen is not None:
        centre, width = chosen
        image = to_uint8(values, centre - width / 2, centre + width / 2)
    else:
        image = to_uint8(values)
    if getattr(ds, "PhotometricInterpretation", "") == "MONOCHROME1":
        image = 255 - image
    return image


def _read_dicom(source: Path | BinaryIO, name: str | Path, index: int | None,
                window: tuple[float, float] | None) -> np.ndarray:
    import pydicom

    try:
        ds = pydicom.dcmread(source, force=True)
    except Exception as error:  # pydicom's parse errors are not one type
        raise ImageReadError(name, f"not a readable DICOM file ({error}); re-export it") from None
    if "PixelData" not in ds:
        raise ImageReadError(name, "DICOM file without pixel data (a report or structured "
                             "document?); remove it from the image folder")
    return _dicom_to_array(ds, name, index, window)


def _read_nifti(path: Path, index: int | None) -> np.ndarray:
    import nibabel

    try:
        volume = np.asanyarray(nibabel.load(str(path)).dataobj)
    except Exception as error:  # nibabel raises several types for bad files
        raise ImageReadError(path, f"not a readable NIfTI file ({error}); re-export it") from None
    volume = np.squeeze(volume)
    if volume.ndim == 2:
        return np.rot90(to_uint8(volume))
    if volume.ndim != 3:
        raise ImageReadError(path, f"NIfTI with {volume.ndim} dimensions; expected a 2-D image "
                             "or a 3-D volume")
    slice_ = volume[..., volume.shape[-1] // 2 if index is None else index]
    return np.rot90(to_uint8(slice_))  # voxel (x, y) -> viewer rows/columns, as radiology viewers


def count_frames(path: str | Path) -> int:
    """Slices of a NIfTI volume, frames of a DICOM file, 1 for plain images."""
    path = Path(path)
    suffix = suffix_of(path)
    if suffix in NIFTI_SUFFIXES:
        import nibabel

        shape = [s for s in nibabel.load(str(path)).shape if s > 1]
        return shape[2] if len(shape) >= 3 else 1
    if suffix in DICOM_SUFFIXES or (suffix == "" and has_dicom_preamble(path)):
        import pydicom

        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        return int(getattr(ds, "NumberOfFrames", 1) or 1)
    return 1


def read_image(path: str | Path, *, index: int | None = None,
               window: tuple[float, float] | None = None,
               max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode one image file to uint8 (H x W or H x W x 3); ImageReadError says what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(path, "no such file")
    if path.stat().st_size == 0:
        raise ImageReadError(path, "empty file (0 bytes); remove it or copy it again")
    suffix = suffix_of(path)
    if suffix in NIFTI_SUFFIXES:
        return _read_nifti(path, index)
    if suffix in DICOM_SUFFIXES or has_dicom_preamble(path):
        return _read_dicom(path, path, index, window)
    return _open_pil(path, path, max_pixels, index)


def read_image_bytes(data: bytes, *, name: str = "upload",
                     window: tuple[float, float] | None = None,
                     max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode an image held in memory (an upload); never touches the disk."""
    if not data:
        raise ImageReadError(name, "empty upload (0 bytes)")
    if len(data) >= 132 and data[128:132] == b"DICM":
        return _read_dicom(io.BytesIO(data), name, None, window)
    return _open_pil(io.BytesIO(data), name, max_pixels, None)
