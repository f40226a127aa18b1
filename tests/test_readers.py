"""mediscan.data.readers: every PIL mode, DICOM and NIfTI to uint8, and clear errors for bad files."""

from __future__ import annotations

import pickle
import time
from pathlib import Path

import numpy as np
import pytest
from helpers_images import (
    colour_pattern,
    gradient,
    png_claiming,
    write_dicom,
    write_image,
    write_nifti,
    write_truncated_jpeg,
)
from PIL import Image

from mediscan.data.readers import (
    IMAGE_SUFFIXES,
    DecodeBudget,
    ImageReadError,
    count_frames,
    looks_like_image,
    read_image,
    read_image_bytes,
    suffix_of,
    to_uint8,
)

SIZE = (32, 24)  # width, height
H, W = SIZE[1], SIZE[0]


def _exact(expected):
    return lambda image: np.testing.assert_array_equal(image, expected)


def _close(expected, tolerance):
    return lambda image: np.testing.assert_array_less(
        np.abs(image.astype(int) - expected.astype(int)).mean(), tolerance)


def _ramp_to_8_bit(image):
    """A 0..max ramp of any depth comes out 0..255, non-decreasing left to right."""
    row = image[0].astype(int)
    assert row[0] == 0 and row[-1] == 255
    assert (np.diff(row) >= 0).all()
    np.testing.assert_array_equal(image, np.repeat(image[:1], H, axis=0))


RGB = colour_pattern(SIZE)
RAMP = gradient(SIZE)
ALPHA_RGB = (RGB.astype(np.uint16) * RAMP[..., None] + 127) // 255
ALPHA_GREY = (200 * RAMP.astype(np.uint16) + 127) // 255

PIL_CASES = [  # mode, suffix, save options, expected shape, check
    ("L", ".png", {}, (H, W), _exact(RAMP)),
    ("L", ".jpg", {"quality": 95}, (H, W), _close(RAMP, 2)),
    ("L", ".bmp", {}, (H, W), _exact(RAMP)),
    ("L", ".tif", {}, (H, W), _exact(RAMP)),
    ("L", ".gif", {}, (H, W), _exact(RAMP)),
    ("RGB", ".png", {}, (H, W, 3), _exact(RGB)),
    ("RGB", ".jpg", {"quality": 95}, (H, W, 3), _close(RGB, 3)),
    ("RGB", ".webp", {"lossless": True}, (H, W, 3), _exact(RGB)),
    ("RGB", ".bmp", {}, (H, W, 3), _exact(RGB)),
    ("RGBA", ".png", {}, (H, W, 3), _exact(ALPHA_RGB)),
    ("RGBA", ".tif", {}, (H, W, 3), _exact(ALPHA_RGB)),
    ("LA", ".png", {}, (H, W), _exact(ALPHA_GREY)),
    ("CMYK", ".jpg", {"quality": 95}, (H, W, 3), _close(RGB, 4)),
    ("CMYK", ".tif", {}, (H, W, 3), _exact(RGB)),
    ("I;16", ".png", {}, (H, W), _ramp_to_8_bit),
    ("I;16", ".tif", {}, (H, W), _ramp_to_8_bit),
    ("I;16B", ".tif", {}, (H, W), _ramp_to_8_bit),
    ("I", ".tif", {}, (H, W), _ramp_to_8_bit),
    ("F", ".tif", {}, (H, W), _ramp_to_8_bit),
    ("1", ".png", {}, (H, W), _exact(np.where(RAMP > 127, 255, 0))),
]


@pytest.mark.parametrize("mode, suffix, save, shape, check", PIL_CASES,
                         ids=[f"{c[0]}{c[1]}" for c in PIL_CASES])
def test_every_pil_mode_decodes_to_uint8(tmp_path, mode, suffix, save, shape, check):
    path = tmp_path / f"image{suffix}"
    write_image(path, mode, SIZE, **save)
    image = read_image(path)
    assert image.dtype == np.uint8 and image.shape == shape
    assert image.flags.writeable and image.flags.c_contiguous
    check(image)


@pytest.mark.parametrize("palette, shape", [("grey", (H, W)), ("colour", (H, W, 3))])
def test_palette_images_are_grey_only_when_their_colours_are(tmp_path, palette, shape):
    indices = (np.arange(W)[None, :].repeat(H, axis=0) % 4).astype(np.uint8)
    image = Image.fromarray(indices, "P")
    colours = [0, 0, 0, 80, 80, 80, 160, 160, 160, 255, 255, 255] if palette == "grey" else \
        [255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 20, 30]
    image.putpalette(colours)
    image.save(tmp_path / "p.png")
    out = read_image(tmp_path / "p.png")
    expected = np.asarray(Image.open(tmp_path / "p.png").convert("RGB"))
    assert out.shape == shape
    np.testing.assert_array_equal(out, expected[..., 0] if palette == "grey" else expected)


def test_transparent_palette_entry_is_composited_on_black(tmp_path):
    indices = np.ones((H, W), np.uint8)
    indices[:, :5] = 0
    image = Image.fromarray(indices, "P")
    image.putpalette([250, 250, 250, 100, 100, 100])
    image.save(tmp_path / "t.gif", transparency=0)
    out = read_image(tmp_path / "t.gif")
    assert out.shape == (H, W)
    assert (out[:, :5] == 0).all() and (out[:, 5:] == 100).all()


def test_exif_orientation_is_applied(tmp_path):
    pixels = np.zeros((20, 30), np.uint8)
    pixels[0, 0] = 255  # top-left marker
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    image.save(tmp_path / "r.jpg", exif=exif, quality=100)
    out = read_image(tmp_path / "r.jpg")
    assert out.shape == (30, 20)
    assert out[0, -1] > 200 and out[0, 0] < 50  # the marker moved to the top-right


def test_multi_page_tiff_pages_by_index(tmp_path):
    pages = [Image.fromarray(np.full((8, 8), 10 * (k + 1), np.uint8)) for k in range(3)]
    pages[0].save(tmp_path / "stack.tif", save_all=True, append_images=pages[1:])
    assert count_frames(tmp_path / "stack.tif") == 3
    assert read_image(tmp_path / "stack.tif")[0, 0] == 10  # first page by default
    assert read_image(tmp_path / "stack.tif", index=2)[0, 0] == 30
    with pytest.raises(ImageReadError, match="frame 3 is out of range"):
        read_image(tmp_path / "stack.tif", index=3)


def _text_as_jpg(path: Path) -> Path:
    path.write_text("patient notes, not an image")
    return path


def _empty(path: Path) -> Path:
    path.write_bytes(b"")
    return path


BAD_FILES = [  # name, writer, phrase the reason must contain
    ("cut.jpg", write_truncated_jpeg, "truncated"),
    ("notes.jpg", _text_as_jpg, "not a recognised image"),
    ("empty.png", _empty, "empty (0 bytes"),
    ("missing.png", lambda p: p, "no such file"),
    ("folder.png", lambda p: p.mkdir() or p, "is a folder"),
]


@pytest.mark.parametrize("name, write, phrase", BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_bad_files_raise_an_error_naming_the_file(tmp_path, name, write, phrase):
    path = write(tmp_path / name)
    with pytest.raises(ImageReadError) as caught:
        read_image(path)
    error = caught.value
    assert error.path == path and phrase in error.reason
    assert str(error) == f"{path}: {error.reason}"
    assert isinstance(error, ValueError)


def test_truncated_message_says_what_to_do(tmp_path):
    path = write_truncated_jpeg(tmp_path / "x.jpg")
    with pytest.raises(ImageReadError) as caught:
        read_image(path)
    assert str(caught.value) == (f"{path}: image file is truncated (the file is damaged or "
                                 "incomplete; re-export or remove it)")


def test_error_survives_pickling_for_worker_processes():
    error = pickle.loads(pickle.dumps(ImageReadError("scans/x.jpg", "bad")))
    assert (error.path, error.reason, str(error)) == (Path("scans/x.jpg"), "bad", "scans/x.jpg: bad")


@pytest.mark.parametrize("window", [(10, 0), (10, -5), (np.nan, 10), (1, 2, 3)])
def test_invalid_window_is_a_value_error(tmp_path, window):
    write_image(tmp_path / "a.png", "L", SIZE)
    with pytest.raises(ValueError, match="window"):
        read_image(tmp_path / "a.png", window=window)


# --- to_uint8, the one normalisation every reader shares ---------------------------------------

TO_UINT8_CASES = [  # values, window, expected
    (np.array([[0, 7, 255]], np.uint8), None, [[0, 7, 255]]),  # 8-bit data unchanged
    (np.array([[0, 32768, 65535]], np.uint16), None, [[0, 128, 255]]),
    (np.array([[-1000, 0, 1000]], np.int16), None, [[0, 128, 255]]),
    (np.array([[np.nan, 0.0, 0.5, 1.0, np.inf]]), None, [[0, 0, 128, 255, 255]]),
    (np.full((1, 3), 1234, np.uint16), None, [[0, 0, 0]]),  # constant image
    (np.array([[-200, 40, 50, 60, 300]], np.int16), (50, 20), [[0, 0, 128, 255, 255]]),
    (np.array([[0, 100, 200]], np.uint8), (100, 100), [[0, 128, 255]]),  # window on 8-bit too
]


@pytest.mark.parametrize("values, window, expected", TO_UINT8_CASES)
def test_to_uint8(values, window, expected):
    out = to_uint8(values, window)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, expected)


# --- bytes (uploads) ---------------------------------------------------------------------------

def test_bytes_decode_like_files(tmp_path):
    cases = {"a.png": lambda p: write_image(p, "RGB", SIZE),
             "b.tif": lambda p: write_image(p, "I;16", SIZE),
             "c.dcm": lambda p: write_dicom(p, gradient(SIZE, np.uint16)),
             "d.nii.gz": lambda p: write_nifti(p, np.arange(60, dtype=np.float32).reshape(3, 4, 5))}
    for name, write in cases.items():
        path = tmp_path / name
        write(path)
        from_bytes = read_image_bytes(path.read_bytes(), name=name)
        np.testing.assert_array_equal(from_bytes, read_image(path), err_msg=name)


def test_bytes_dicom_is_found_by_its_preamble_without_a_name(tmp_path):
    write_dicom(tmp_path / "x.dcm", gradient(SIZE, np.uint16))
    assert read_image_bytes((tmp_path / "x.dcm").read_bytes()).shape == (H, W)


def test_bytes_refuse_a_huge_png_header_quickly():
    started = time.perf_counter()
    with pytest.raises(ImageReadError, match="too large") as caught:
        read_image_bytes(png_claiming(100_000, 100_000), name="bomb.png")
    assert time.perf_counter() - started < 2.0
    assert str(caught.value).startswith("bomb.png: ")


def test_bytes_max_pixels_is_checked_before_decoding():
    with pytest.raises(ImageReadError, match=r"7000x7000 = 49,000,000 pixels, limit 40,000,000"):
        read_image_bytes(png_claiming(7000, 7000))
    with pytest.raises(ImageReadError, match="limit 100"):
        read_image_bytes(png_claiming(20, 20), budget=DecodeBudget(max_pixels=100))


@pytest.mark.parametrize("data, phrase", [(b"", "empty"), (b"hello world" * 10, "not a recognised")])
def test_bad_bytes_name_the_upload(data, phrase):
    with pytest.raises(ImageReadError, match=phrase) as caught:
        read_image_bytes(data, name="scan.jpg")
    assert caught.value.path == Path("scan.jpg")


# --- DICOM -------------------------------------------------------------------------------------

CT = np.array([[0, 500, 1000, 1500], [2000, 2500, 3000, 4000]], np.uint16)  # raw stored values


DICOM_CASES = [  # id, write options, read options, expected
    ("min-max", {}, {}, to_uint8(CT)),
    # slope 1, intercept -1024 -> HU -1024..2976; window (40, 400) shows -160..240 HU
    ("rescale+file-window", {"slope": 1, "intercept": -1024, "window": (40, 400)}, {},
     to_uint8(CT.astype(float) - 1024, (40, 400))),
    ("rescale+given-window", {"slope": 2, "intercept": -1000, "window": (40, 400)},
     {"window": (3000, 2000)}, to_uint8(CT * 2.0 - 1000, (3000, 2000))),
    ("file-window", {"window": (1000, 1000)}, {}, [[0, 0, 128, 255], [255, 255, 255, 255]]),
    ("given-window", {"window": (1000, 1000)}, {"window": (2000, 4000)},
     [[0, 32, 64, 96], [128, 159, 191, 255]]),
]


@pytest.mark.parametrize("write, read, expected", [c[1:] for c in DICOM_CASES],
                         ids=[c[0] for c in DICOM_CASES])
def test_dicom_rescale_and_window(tmp_path, write, read, expected):
    path = write_dicom(tmp_path / "ct.dcm", CT, bits_stored=12, **write)
    np.testing.assert_array_equal(read_image(path, **read), expected)


def test_dicom_rescale_slope_and_intercept_apply_before_the_window(tmp_path):
    raw = np.array([[0, 250, 500, 750, 1000]], np.uint16)
    plain = write_dicom(tmp_path / "plain.dcm", raw)
    rescaled = write_dicom(tmp_path / "rescaled.dcm", raw, slope=2, intercept=-1000)
    window = (0, 2000)  # -1000..1000 in modality units
    np.testing.assert_array_equal(read_image(rescaled, window=window), [[0, 64, 128, 191, 255]])
    np.testing.assert_array_equal(read_image(plain, window=window), [[128, 159, 191, 223, 255]])


def test_dicom_signed_pixels(tmp_path):
    values = np.array([[-1024, 0, 1024]], np.int16)
    path = write_dicom(tmp_path / "signed.dcm", values)
    np.testing.assert_array_equal(read_image(path), [[0, 128, 255]])


def test_dicom_monochrome1_is_inverted(tmp_path):
    normal = read_image(write_dicom(tmp_path / "m2.dcm", CT, photometric="MONOCHROME2"))
    inverted = read_image(write_dicom(tmp_path / "m1.dcm", CT, photometric="MONOCHROME1"))
    np.testing.assert_array_equal(inverted, 255 - normal)


def test_dicom_rgb(tmp_path):
    path = write_dicom(tmp_path / "colour.dcm", RGB, photometric="RGB")
    out = read_image(path)
    assert out.shape == (H, W, 3)
    np.testing.assert_array_equal(out, RGB)


def _frames(count: int) -> np.ndarray:
    """Frames whose only bright pixel sits in column k (so min-max scaling keeps them apart)."""
    frames = np.zeros((count, 4, 8), np.uint16)
    for k in range(count):
        frames[k, :, k] = 1000
    return frames


@pytest.mark.parametrize("index, bright_column", [(None, 2), (0, 0), (4, 4)])
def test_dicom_multi_frame_picks_a_frame(tmp_path, index, bright_column):
    path = write_dicom(tmp_path / "cine.dcm", _frames(5))
    assert count_frames(path) == 5
    image = read_image(path, index=index)
    assert image.shape == (4, 8)
    assert (image[:, bright_column] == 255).all() and image.sum() == 4 * 255


def test_dicom_frame_out_of_range(tmp_path):
    path = write_dicom(tmp_path / "cine.dcm", _frames(5))
    with pytest.raises(ImageReadError, match=r"frame 5 is out of range .*0\.\.4"):
        read_image(path, index=5)


@pytest.mark.parametrize("name", ["IM0001", "1.2.840.113619.2.55.3", "slice.ima"])
def test_dicom_without_an_image_suffix_is_detected(tmp_path, name):
    path = write_dicom(tmp_path / name, CT)
    assert looks_like_image(path)
    np.testing.assert_array_equal(read_image(path), to_uint8(CT))


def test_dicom_without_preamble_or_file_meta_reads_by_suffix(tmp_path):
    path = write_dicom(tmp_path / "bare.dcm", CT, preamble=False)
    assert path.read_bytes()[128:132] != b"DICM"
    np.testing.assert_array_equal(read_image(path), to_uint8(CT))


def test_corrupt_dicom_names_the_file(tmp_path):
    good = write_dicom(tmp_path / "good.dcm", CT).read_bytes()
    path = tmp_path / "corrupt"
    path.write_bytes(good[:132] + bytes(range(256)) * 4)
    with pytest.raises(ImageReadError) as caught:
        read_image(path)
    assert caught.value.path == path and "re-export or remove it" in caught.value.reason


def write_compressed_dicom(path, syntax, payload: bytes):
    """A CT DICOM file claiming the compressed transfer `syntax`, its pixel data replaced by `payload`."""
    import pydicom
    from pydicom.encaps import encapsulate

    write_dicom(path, CT)
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = syntax
    ds.PixelData = encapsulate([payload])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    return path


def test_compressed_dicom_without_decoder_says_what_to_install(tmp_path):
    from pydicom.pixels import get_decoder
    from pydicom.uid import JPEGLSLossless

    if get_decoder(JPEGLSLossless).is_available:
        pytest.skip("a JPEG-LS decoder is installed here")
    path = write_compressed_dicom(tmp_path / "jls.dcm", JPEGLSLossless, b"\xff\xd8 not really JPEG-LS")
    with pytest.raises(ImageReadError) as caught:
        read_image(path)
    assert "JPEG-LS Lossless" in caught.value.reason
    assert "pip install pylibjpeg pylibjpeg-libjpeg" in caught.value.reason


def test_compressed_dicom_with_a_decoder_but_damaged_data(tmp_path):
    from pydicom.pixels import get_decoder
    from pydicom.uid import JPEG2000Lossless

    if not get_decoder(JPEG2000Lossless).is_available:
        pytest.skip("no JPEG 2000 decoder installed here")
    path = write_compressed_dicom(tmp_path / "j2k.dcm", JPEG2000Lossless, b"garbage")
    with pytest.raises(ImageReadError, match="JPEG 2000.*could not be decoded"):
        read_image(path)


# --- NIfTI -------------------------------------------------------------------------------------

VOLUME = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6) * 7


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@pytest.mark.parametrize("index, expected_slice", [(None, 3), (0, 0), (5, 5)])
def test_nifti_slice_values(tmp_path, suffix, index, expected_slice):
    path = write_nifti(tmp_path / f"brain{suffix}", VOLUME)
    image = read_image(path, index=index)
    np.testing.assert_array_equal(image, to_uint8(np.rot90(VOLUME[:, :, expected_slice])))
    assert image.shape == (5, 4) and count_frames(path) == 6


def test_nifti_rot90_puts_the_end_of_the_second_axis_on_top(tmp_path):
    volume = np.zeros((4, 5, 1), np.uint8)
    volume[0, 4, 0] = 255  # first voxel along x, last along y (anterior in RAS data)
    image = read_image(write_nifti(tmp_path / "a.nii", volume))
    assert image.shape == (5, 4) and image[0, 0] == 255


@pytest.mark.parametrize("shape, frames, image_shape", [
    ((4, 5), 1, (5, 4)),          # a 2-D NIfTI
    ((4, 5, 1), 1, (5, 4)),       # a single-slice volume
    ((4, 5, 6, 2), 6, (5, 4)),    # 4-D: the first volume
    ((1, 5, 6), 1, (6, 5)),       # a singleton first axis is dropped
])
def test_nifti_shapes(tmp_path, shape, frames, image_shape):
    path = write_nifti(tmp_path / "v.nii", np.arange(np.prod(shape), dtype=np.float32).reshape(shape))
    assert count_frames(path) == frames
    assert read_image(path).shape == image_shape


def test_nifti_display_range_acts_as_window(tmp_path):
    volume = np.linspace(0, 1000, 4 * 5 * 3, dtype=np.float32).reshape(4, 5, 3)
    path = write_nifti(tmp_path / "cal.nii", volume, cal=(400.0, 600.0))
    np.testing.assert_array_equal(read_image(path), to_uint8(np.rot90(volume[:, :, 1]), (500, 200)))


def test_nifti_slice_out_of_range(tmp_path):
    path = write_nifti(tmp_path / "v.nii.gz", VOLUME)
    with pytest.raises(ImageReadError, match="slice 6 is out of range"):
        read_image(path, index=6)


# --- suffixes ----------------------------------------------------------------------------------

def test_image_suffixes():
    assert {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".gif", ".webp", ".dcm", ".nii",
            ".nii.gz"} <= IMAGE_SUFFIXES
    assert suffix_of("scan.NII.GZ") == ".nii.gz" and suffix_of(Path("a/b.JPG")) == ".jpg"


@pytest.mark.parametrize("name, content, expected", [
    ("a.JPG", b"", True),           # by suffix; the content is not looked at
    ("b.nii.gz", b"", True),
    ("notes.txt", b"DICM" * 40, False),
    ("README", b"plain text", False),  # extension-less, no DICOM preamble
])
def test_looks_like_image(tmp_path, name, content, expected):
    (tmp_path / name).write_bytes(content)
    assert looks_like_image(tmp_path / name) is expected
