"""The decoding budget of uploads: huge declared volumes, frames and pixels are refused from their
headers, large images are reduced while decoding, decoding is concurrency-limited, nothing is kept."""

import asyncio
import gc
import os
import signal
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from helpers_images import big_image_bytes, nifti_bomb, write_dicom
from test_export import make_run

from mediscan.data.readers import (
    DEFAULT_REDUCE_TO,
    DecodeBudget,
    ImageReadError,
    not_a_regular_file,
    read_image,
    read_image_bytes,
)
from mediscan.predict import Classifier
from mediscan.serve import app as app_module
from mediscan.serve.app import create_app
from mediscan.serve.batching import MicroBatcher
from mediscan.serve.uploads import TRIM_ABOVE_BYTES, trim_heap


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    return Classifier.load(make_run(tmp_path_factory.mktemp("runs") / "budget"), device="cpu")


def test_nifti_bomb_is_refused_from_its_header_in_well_under_a_second():
    data = nifti_bomb((6000, 6000, 270))
    started = time.perf_counter()
    with pytest.raises(ImageReadError, match="declares 9,270 MiB of pixel data.*limit of 256 MiB"):
        read_image_bytes(data, name="bomb.nii.gz")
    assert time.perf_counter() - started < 0.5
    assert len(data) < 20_000


def test_gzip_stream_is_never_decompressed_past_the_cap():
    data = nifti_bomb((64, 64, 3), zeros=64 * 2**20, vox_offset=48 * 2**20)
    budget = DecodeBudget(max_bytes=16 * 2**20)
    started = time.perf_counter()
    with pytest.raises(ImageReadError, match="more than 16 MiB|declares 48 MiB"):
        read_image_bytes(data, name="offset.nii.gz", budget=budget)
    assert time.perf_counter() - started < 0.5
    assert read_image_bytes(nifti_bomb((64, 64, 3), zeros=64 * 64 * 3), name="ok.nii.gz").shape == (64, 64)


def test_dicom_declaring_many_frames_is_refused_before_decoding(tmp_path):
    path = tmp_path / "many.dcm"
    write_dicom(path, np.zeros((16, 16), dtype=np.uint16))
    import pydicom

    ds = pydicom.dcmread(path)
    ds.NumberOfFrames = 100_000
    ds.save_as(path)
    with pytest.raises(ImageReadError, match="declares 100,000 frames/slices, more than the limit of 4,096"):
        read_image_bytes(path.read_bytes(), name="many.dcm")


@pytest.mark.parametrize("fmt,mode,side", [("PNG", "L", 2000), ("PNG", "RGB", 2000), ("JPEG", "RGB", 1500)])
def test_large_uploads_are_reduced_while_decoding(fmt, mode, side):
    image = read_image_bytes(big_image_bytes(6000, mode, fmt))
    assert image.shape[:2] == (side, side) and image.shape[0] * image.shape[1] <= DEFAULT_REDUCE_TO
    assert abs(float(image.mean()) - 90) < 1  # a box average keeps the flat grey level
    assert read_image_bytes(big_image_bytes(600, mode, fmt)).shape[:2] == (600, 600)  # untouched


def test_files_on_disk_are_not_reduced(tmp_path):
    path = tmp_path / "big.png"
    path.write_bytes(big_image_bytes(3000))
    assert read_image(path).shape == (3000, 3000)


def test_fifo_is_refused_without_being_opened(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    signal.alarm(10)  # a reader that opens the FIFO would block here forever
    try:
        with pytest.raises(ImageReadError, match="FIFO"):
            read_image(fifo)
    finally:
        signal.alarm(0)
    assert "FIFO" in not_a_regular_file(fifo)


def test_links_that_lead_nowhere_are_named(tmp_path):
    (tmp_path / "loop.png").symlink_to(tmp_path / "loop.png")
    (tmp_path / "gone.png").symlink_to(tmp_path / "missing.png")
    assert "loop" in not_a_regular_file(tmp_path / "loop.png")
    assert "dangling" in not_a_regular_file(tmp_path / "gone.png")
    assert not_a_regular_file(tmp_path) is None
    with pytest.raises(ImageReadError, match="symbolic link loop"):
        read_image(tmp_path / "loop.png")


def test_server_refuses_the_nifti_bomb_fast(classifier):
    with TestClient(create_app(classifier)) as client:
        started = time.perf_counter()
        response = client.post("/api/predict", files={"file": ("bomb.nii.gz", nifti_bomb())})
        seconds = time.perf_counter() - started
    assert response.status_code == 400 and "declares 9,270 MiB" in response.json()["detail"]
    assert seconds < 1.0


def test_two_file_parts_are_refused(classifier):
    png = big_image_bytes(32)
    with TestClient(create_app(classifier)) as client:
        response = client.post("/api/predict", files=[("file", ("a.png", png)), ("file", ("b.png", png))])
        assert response.status_code == 400
        assert response.json()["detail"] == "the form has 2 'file' parts; send one image per request"
        assert client.post("/api/predict", files={"file": ("a.png", png)}).status_code == 200


def test_decoding_runs_at_most_decode_workers_at_once(classifier, monkeypatch):
    running, peak, lock = 0, 0, threading.Lock()
    decode = app_module.decode_upload

    def counted(*args, **kwargs):
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        try:
            time.sleep(0.02)
            return decode(*args, **kwargs)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(app_module, "decode_upload", counted)
    app = create_app(classifier, decode_workers=2)
    data = big_image_bytes(3000)

    async def burst():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=60) as client:
            return await asyncio.gather(*[client.post("/api/predict", files={"file": ("big.png", data)})
                                          for _ in range(8)])

    responses = asyncio.run(burst())
    assert [r.status_code for r in responses] == [200] * 8
    assert peak == 2


def test_batcher_keeps_no_image_alive_once_answered():
    executor = ThreadPoolExecutor(max_workers=1)
    batcher = MicroBatcher(lambda items: [item.shape for item in items], executor, wait_ms=1)

    async def serve_two():
        images = [np.zeros((256, 256)), np.zeros((128, 128))]
        refs = [weakref.ref(image) for image in images]
        results = await asyncio.gather(*[batcher.submit(image) for image in images])
        del images
        await asyncio.sleep(0.01)  # the worker is idle, waiting for the next batch
        gc.collect()
        return results, [ref() is None for ref in refs]

    results, freed = asyncio.run(serve_two())
    executor.shutdown()
    assert results == [(256, 256), (128, 128)] and freed == [True, True]


def test_trim_heap_only_after_large_images():
    assert trim_heap(TRIM_ABOVE_BYTES - 1) is False
    assert trim_heap(TRIM_ABOVE_BYTES) is (os.uname().sysname == "Linux")
