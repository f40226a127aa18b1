"""REST API: predict, explain, model card, health, auth, limits, bad uploads, DICOM, batching."""

import asyncio
import base64
import io
import json
import struct
import zlib

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from test_export import CLASSES, make_run
from typer.testing import CliRunner

from mediscan.cli import app as cli
from mediscan.predict import Classifier
from mediscan.serve.app import create_app


def png_bytes(shape=(64, 80), seed=0) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)).save(
        buffer, format="PNG")
    return buffer.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + \
        struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose valid header claims `width` x `height` (a decompression bomb's shape)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + \
        png_chunk(b"IDAT", zlib.compress(bytes(width + 1) * 4)) + png_chunk(b"IEND", b"")


def dicom_bytes(tmp_path) -> bytes:
    """A small 16-bit MR slice written with pydicom 3."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = MRImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientName = "MR", "Phantom^Test"
    ds.Rows, ds.Columns, ds.SamplesPerPixel = 48, 40, 1
    ds.PhotometricInterpretation, ds.PixelRepresentation = "MONOCHROME2", 0
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelData = np.random.default_rng(0).integers(0, 4000, (48, 40), dtype=np.uint16).tobytes()
    path = tmp_path / "slice.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path.read_bytes()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run = make_run(tmp_path_factory.mktemp("runs") / "tiny")
    headline = {"accuracy": {"value": 0.9, "ci": [0.85, 0.94]}}
    (run / "metrics.json").write_text(json.dumps({"test": {"n": 120, "headline": headline}}))
    return run


@pytest.fixture(scope="module")
def classifier(run):
    return Classifier.load(run, device="cpu", abstain_below=0.99)


@pytest.fixture(scope="module")
def client(classifier, run):
    with TestClient(create_app(classifier, run_dir=run, max_upload_bytes=200_000)) as client:
        yield client


def upload(client, data, name="scan.png", content_type="image/png", path="/api/predict", **kw):
    return client.post(path, files={"file": (name, data, content_type)}, **kw)


def test_predict(client):
    response = upload(client, png_bytes())
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["class"] in CLASSES and set(body["probabilities"]) == set(CLASSES)
    assert body["probability"] == pytest.approx(max(body["probabilities"].values()))
    assert body["uncertain"] is True  # an untrained net is never 99% sure
    assert body["model"]["name"] == "tiny" and body["model"]["created"]


def test_predict_matches_the_library(client, classifier):
    data = png_bytes(seed=5)
    expected = classifier.predict(np.asarray(Image.open(io.BytesIO(data))))[0]
    body = upload(client, data).json()
    assert body["class"] == expected.label
    assert body["probability"] == pytest.approx(expected.probability, abs=1e-6)


def test_explain_returns_overlay_and_image(client):
    response = upload(client, png_bytes(), path="/api/explain?method=gradcam%2B%2B")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["method"] == "gradcam++" and body["class"] in CLASSES
    for key in ("overlay_png", "image_png"):
        with Image.open(io.BytesIO(base64.b64decode(body[key]))) as png:
            assert png.format == "PNG" and png.size == (130, 130)
    assert upload(client, png_bytes(), path="/api/explain?method=lime").status_code == 400


def test_model_card_and_health(client):
    model = client.get("/api/model").json()
    assert model["classes"] == list(CLASSES) and model["input_size"] == 130
    assert model["metrics"]["accuracy"]["value"] == 0.9 and model["metrics"]["test_images"] == 120
    assert model["model_card"]["not_a_medical_device"] is True
    assert "research" in model["model_card"]["intended_use"].lower()
    assert client.get("/healthz").json()["status"] == "ok"
    schema = client.get("/openapi.json").json()
    assert {"/api/predict", "/api/explain", "/api/model", "/healthz"} <= set(schema["paths"])
    assert client.get("/docs").status_code == 404  # the CDN-based pages are off


def test_page_and_security_headers(client):
    page = client.get("/")
    assert page.status_code == 200 and "mediscan" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for asset in ("/static/app.js", "/static/style.css"):
        assert client.get(asset).status_code == 200


def test_token_required_when_set(classifier):
    with TestClient(create_app(classifier, token="s3cret")) as client:
        assert upload(client, png_bytes()).status_code == 401
        assert client.get("/api/model").status_code == 401
        wrong = client.get("/api/model", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and "bearer" in wrong.json()["detail"]
        good = {"Authorization": "Bearer s3cret"}
        assert upload(client, png_bytes(), headers=good).status_code == 200
        assert client.get("/healthz").status_code == 200 and client.get("/").status_code == 200


def test_oversize_upload_is_413(client):
    big = png_bytes(shape=(700, 700))  # noise compresses badly: ~490 kB > 200 kB
    response = upload(client, big)
    assert response.status_code == 413 and "limit" in response.json()["detail"]


def test_oversize_streamed_body_without_length_is_413(client):
    def chunks():
        for _ in range(40):
            yield b"x" * 16384

    response = client.post("/api/predict", content=chunks(),
                           headers={"content-type": "multipart/form-data; boundary=zz"})
    assert response.status_code == 413


@pytest.mark.parametrize("data,name,expected", [
    (b"hello, I am a text file", "notes.txt", 415),
    (b"\x00\x01garbage" * 50, "scan.png", 415),
    (b"", "empty.png", 400),
    ("truncated", "cut.png", 400),
    ("bomb", "bomb.png", 400),
    ("giant", "giant.png", 400),
])
def test_bad_uploads_get_clear_4xx(client, data, name, expected):
    if data == "truncated":
        data = png_bytes()[:200]
    elif data in ("bomb", "giant"):  # over mediscan's 40 Mpx limit, over PIL's own limit
        data = png_claiming(8000, 8000) if data == "bomb" else png_claiming(60_000, 60_000)
    response = upload(client, data, name=name)
    assert response.status_code == expected, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and len(detail) > 10
    if name in ("bomb.png", "giant.png"):
        assert "too large" in detail


def test_wrong_requests(client):
    assert client.post("/api/predict", json={"file": "x"}).status_code == 415
    no_file = client.post("/api/predict", files={"image": ("a.png", png_bytes(), "image/png")})
    assert no_file.status_code == 400 and "'file'" in no_file.json()["detail"]


def test_dicom_upload(client, tmp_path):
    data = dicom_bytes(tmp_path)
    response = upload(client, data, name="slice.dcm", content_type="application/dicom")
    assert response.status_code == 200, response.text
    assert response.json()["class"] in CLASSES
    anonymous = upload(client, data, name="blob", content_type="application/octet-stream")
    assert anonymous.status_code == 200  # recognised by the DICM preamble


def test_file_names_are_never_paths(client, tmp_path):
    response = upload(client, png_bytes(), name="../../../../etc/passwd")
    assert response.status_code == 200


def test_concurrent_requests_are_batched(classifier):
    app = create_app(classifier, max_batch=32, batch_wait_ms=50)
    data = png_bytes()

    async def burst():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await asyncio.gather(*[client.post("/api/predict", files={"file": ("a.png", data)})
                                          for _ in range(32)])

    responses = asyncio.run(burst())
    assert all(r.status_code == 200 for r in responses)
    assert len({r.json()["class"] for r in responses}) == 1
    stats = app.state.batcher.stats()
    assert stats["items"] == 32 and stats["forward_calls"] < 32
    print(f"32 concurrent requests -> {stats['forward_calls']} forward passes")


def test_cli_serve_defaults_to_loopback_and_reads_the_token_env(run, monkeypatch):
    served = {}
    monkeypatch.setattr("uvicorn.run", lambda app, **kw: served.update(app=app, **kw))
    monkeypatch.setenv("MEDISCAN_TOKEN", "from-env")
    result = CliRunner().invoke(cli, ["serve", str(run), "--port", "8123"])
    assert result.exit_code == 0, result.output
    assert served["host"] == "127.0.0.1" and served["port"] == 8123
    with TestClient(served["app"]) as client:
        assert client.get("/api/model").status_code == 401
        headers = {"Authorization": "Bearer from-env"}
        assert client.get("/api/model", headers=headers).json()["metrics"]["test_images"] == 120
