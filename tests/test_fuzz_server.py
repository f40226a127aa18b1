"""Fuzzing the upload endpoints: random bytes, truncations, huge headers, wrong types -> never 5xx."""

import io
import struct
import zlib

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from test_export import make_run

from mediscan.predict import Classifier
from mediscan.serve.app import create_app

SEED = 20240607
ROUNDS = 12  # per family of inputs; the whole file stays a few seconds


def encoded(fmt: str, rng: np.random.Generator) -> bytes:
    """A small valid image in `fmt`."""
    shape = (int(rng.integers(8, 60)), int(rng.integers(8, 60)), 3)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(buffer, format=fmt)
    return buffer.getvalue()


def huge_headers(rng: np.random.Generator) -> list[bytes]:
    """Valid-looking PNG / BMP / TIFF / GIF headers that claim enormous dimensions."""
    w, h = int(rng.integers(30_000, 2**31 - 1)), int(rng.integers(30_000, 2**31 - 1))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    png = (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr
           + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF) + bytes(64))
    bmp = b"BM" + struct.pack("<IHHI", 54, 0, 0, 54) + struct.pack("<IiiHHIIiiII", 40, w, h, 1, 24,
                                                                  0, 0, 0, 0, 0, 0) + bytes(32)
    tiff = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 2) + \
        struct.pack("<HHII", 256, 4, 1, w) + struct.pack("<HHII", 257, 4, 1, h) + bytes(8)
    gif = b"GIF89a" + struct.pack("<HH", w & 0xFFFF, h & 0xFFFF) + bytes(16)
    return [png, bmp, tiff, gif]


def fuzz_cases() -> list[tuple[bytes, str, str]]:
    """(body, file name, content type) for every family, reproducibly."""
    rng = np.random.default_rng(SEED)
    cases = []
    for _ in range(ROUNDS):
        size = int(rng.integers(1, 4096))
        cases.append((rng.integers(0, 256, size, dtype=np.uint8).tobytes(), "random.png", "image/png"))
        fmt = ["PNG", "JPEG", "BMP", "TIFF", "GIF"][int(rng.integers(5))]
        whole = encoded(fmt, rng)
        cut = int(rng.integers(1, len(whole)))
        cases.append((whole[:cut], f"cut.{fmt.lower()}", "image/" + fmt.lower()))
        flipped = bytearray(whole)
        for index in rng.integers(0, len(flipped), 8):
            flipped[index] ^= 0xFF
        cases.append((bytes(flipped), f"flipped.{fmt.lower()}", "image/" + fmt.lower()))
        cases.append((bytes(128) + b"DICM" + rng.bytes(int(rng.integers(0, 300))), "noise.dcm",
                      "application/dicom"))
    cases += [(data, "huge.img", "image/png") for data in huge_headers(rng)]
    return cases


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    run = make_run(tmp_path_factory.mktemp("runs") / "fuzz")
    app = create_app(Classifier.load(run, device="cpu"), max_upload_bytes=100_000)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


@pytest.mark.filterwarnings("ignore:Tag data larger than file")  # PIL on the broken TIFFs
def test_random_and_broken_uploads_never_cause_5xx(client):
    statuses = {}
    for data, name, content_type in fuzz_cases():
        for path in ("/api/predict", "/api/explain"):
            response = client.post(path, files={"file": (name, data, content_type)})
            assert response.status_code < 500, (name, path, response.text)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
    assert set(statuses) <= {200, 400, 413, 415}
    assert client.get("/healthz").json()["status"] == "ok"


@pytest.mark.parametrize("headers,body", [
    ({"content-type": "application/json"}, b'{"file": "AAAA"}'),
    ({"content-type": "text/plain"}, b"just text"),
    ({"content-type": "image/png"}, b"\x89PNG\r\n\x1a\n"),
    ({"content-type": "multipart/form-data"}, b"no boundary at all"),
    ({"content-type": "multipart/form-data; boundary=x"}, b"--x\r\nbroken"),
    ({"content-type": "application/x-www-form-urlencoded"}, b"file=abc"),
    ({"content-type": "multipart/form-data; boundary=x", "content-length": "999999999"}, b""),
])
def test_wrong_content_types_never_cause_5xx(client, headers, body):
    response = client.post("/api/predict", content=body, headers=headers)
    assert 400 <= response.status_code < 500, response.text
    assert client.get("/healthz").status_code == 200
