"""Write small test images of every kind mediscan reads (PIL modes, DICOM, NIfTI, class folders).

Every writer returns the pixel values it stored, so a test can compare what the reader returns.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

GRADIENT_MODES = {"L": np.uint8, "I;16": np.uint16, "I;16B": np.uint16, "I": np.int32,
                  "F": np.float32}


def gradient(size: tuple[int, int], dtype: type = np.uint8, *,
             high: float | None = None) -> np.ndarray:
    """An HxW left-to-right ramp from 0 to `high` (default: the dtype's maximum, 1.0 for floats)."""
    width, height = size
    integer = np.issubdtype(dtype, np.integer)
    if high is None:
        high = np.iinfo(dtype).max if integer else 1.0
    ramp = np.repeat(np.linspace(0, high, width)[None, :], height, axis=0)
    return (ramp.round() if integer else ramp).astype(dtype)


def colour_pattern(size: tuple[int, int], seed: int = 0) -> np.ndarray:
    """An HxWx3 uint8 image with distinct, smooth channels (survives JPEG roughly)."""
    width, height = size
    y, x = np.mgrid[0:height, 0:width]
    red = 255 * x / max(1, width - 1)
    green = 255 * y / max(1, height - 1)
    blue = np.full_like(red, 40 + 30 * (seed % 6))
    return np.stack([red, green, blue], axis=-1).round().astype(np.uint8)


def write_image(path: Path, mode: str = "RGB", size: tuple[int, int] = (32, 24), *,
                pixels: np.ndarray | None = None, **save: object) -> np.ndarray:
    """Save an image of a PIL mode (format from the suffix); returns the array given to PIL."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if pixels is None:
        pixels = _default_pixels(mode, size)
    image = Image.fromarray(pixels) if mode in ("L", "RGB", "RGBA", "LA") else _from_array(pixels, mode)
    if image.mode != mode:
        image = image.convert(mode)
    image.save(path, **save)
    return pixels


def _default_pixels(mode: str, size: tuple[int, int]) -> np.ndarray:
    if mode in GRADIENT_MODES:
        return gradient(size, GRADIENT_MODES[mode])
    if mode in ("RGB", "CMYK", "P"):
        return colour_pattern(size)
    if mode == "RGBA":
        return np.dstack([colour_pattern(size), gradient(size)])
    if mode == "LA":
        return np.dstack([np.full(size[::-1], 200, np.uint8), gradient(size)])
    if mode == "1":
        return (gradient(size) > 127).astype(np.uint8) * 255
    raise ValueError(f"no default pixels for mode {mode}")


def _from_array(pixels: np.ndarray, mode: str) -> Image.Image:
    """PIL images for the modes Image.fromarray cannot build directly."""
    if mode in ("I;16", "I;16B"):
        return Image.frombytes(mode, pixels.shape[::-1],
                               pixels.astype("<u2" if mode == "I;16" else ">u2").tobytes())
    if mode == "I":
        return Image.fromarray(pixels.astype(np.int32), "I")
    if mode == "F":
        return Image.fromarray(pixels.astype(np.float32), "F")
    if mode == "1":
        return Image.fromarray(pixels).convert("1")
    return Image.fromarray(pixels)  # RGB source for CMYK and P; converted by the caller


def write_truncated_jpeg(path: Path, size: tuple[int, int] = (64, 64), keep: float = 0.5) -> Path:
    """A JPEG cut off after `keep` of its bytes (a damaged download)."""
    path = Path(path)
    write_image(path, "RGB", size, pixels=np.random.default_rng(0).integers(
        0, 255, (size[1], size[0], 3), dtype=np.uint8), quality=95)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def write_dicom(path: Path, pixels: np.ndarray, *, photometric: str = "MONOCHROME2",
                slope: float | None = None, intercept: float | None = None,
                window: tuple[float, float] | None = None, bits_stored: int | None = None,
                preamble: bool = True) -> Path:
    """A DICOM file (pydicom 3) from uint8/uint16/int16 pixels: HxW, FxHxW, HxWx3 or FxHxWx3."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.Modality = "OT"
    ds.set_pixel_data(pixels, photometric, bits_stored or pixels.dtype.itemsize * 8)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    if slope is not None or intercept is not None:
        ds.RescaleSlope, ds.RescaleIntercept = slope or 1, intercept or 0
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if preamble:
        ds.save_as(path, enforce_file_format=True)
    else:
        del ds.file_meta
        ds.save_as(path, implicit_vr=True, little_endian=True)
    return path


def write_nifti(path: Path, volume: np.ndarray, *, cal: tuple[float, float] | None = None) -> Path:
    """A NIfTI-1 file (.nii or .nii.gz, from the suffix) holding `volume` with an identity affine."""
    import nibabel as nib

    image = nib.Nifti1Image(volume, np.eye(4))
    if cal is not None:
        image.header["cal_min"], image.header["cal_max"] = cal
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, path)
    return path


def class_image(label: int, size: tuple[int, int], seed: int) -> np.ndarray:
    """A grey image whose brightness and stripe direction depend on the class (learnable)."""
    width, height = size
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    stripes = np.sin((x if label % 2 else y) * (0.5 + 0.25 * label))
    base = 60 + 40 * (label % 5) + 30 * stripes + rng.normal(0, 8, (height, width))
    return np.clip(base, 0, 255).astype(np.uint8)


def make_class_folder(root: Path, classes: list[str] | tuple[str, ...], n_per_class: int,
                      size: tuple[int, int] = (32, 32), *, suffix: str = ".png",
                      split: str | None = None, seed: int = 0) -> Path:
    """ROOT[/split]/<class>/<class>_<i><suffix> with distinct, class-dependent grey images."""
    root = Path(root)
    base = root / split if split else root
    for label, name in enumerate(classes):
        for i in range(n_per_class):
            pixels = class_image(label, size, seed=seed * 100_003 + label * 1009 + i)
            write_image(base / name / f"{name}_{i:03d}{suffix}", "L", size, pixels=pixels)
    return root


def png_claiming(width: int, height: int) -> bytes:
    """A tiny but well-formed PNG whose header claims `width` x `height` (a decompression bomb)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


def textured(seed: int, size: tuple[int, int] = (64, 64)) -> np.ndarray:
    """A grey HxW image of random blobs: distinct seeds give unrelated perceptual hashes."""
    width, height = size
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (6, 6), dtype=np.uint8))
    smooth = np.asarray(coarse.resize((width, height), Image.BICUBIC), dtype=np.float32)
    return np.clip(smooth + rng.normal(0, 6, (height, width)), 0, 255).astype(np.uint8)


def resized_jpeg_copy(pixels: np.ndarray, path: Path, scale: float = 1.5,
                      quality: int = 70) -> Path:
    """Save `pixels` resized by `scale` and JPEG re-encoded (a near duplicate)."""
    image = Image.fromarray(pixels)
    image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BICUBIC)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, quality=quality)
    return path


def nifti_bomb(shape: tuple[int, ...] = (6000, 6000, 270), *, zeros: int = 2**20,
               vox_offset: int | None = None) -> bytes:
    """A small .nii.gz whose valid header declares `shape` uint8 voxels (only `zeros` follow)."""
    import gzip

    import nibabel as nib

    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.uint8)
    if vox_offset is not None:
        header.set_data_offset(vox_offset)
    return gzip.compress(header.binaryblock + bytes(4) + bytes(zeros))


def big_image_bytes(side: int = 6000, mode: str = "L", fmt: str = "PNG") -> bytes:
    """A flat `side` x `side` image: tiny on disk, large once decoded."""
    import io

    buffer = io.BytesIO()
    Image.new(mode, (side, side), (90,) * Image.getmodebands(mode)).save(buffer, format=fmt)
    return buffer.getvalue()
