"""The REST API and web page: `create_app(classifier)` -> FastAPI app (`mediscan serve RUN`).

Endpoints: POST /api/predict and /api/explain (multipart field `file`), GET /api/model,
GET /healthz, /openapi.json, and the page at `/`. Concurrent predictions are micro-batched
into one forward pass; every use of the model runs in one worker thread. Nothing the page
loads comes from elsewhere (no CDN; the CDN-based /docs pages are switched off).
"""

from __future__ import annotations

import asyncio
import base64
import io
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, FastAPI, File, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from PIL import Image
from starlette.exceptions import HTTPException

import mediscan
from mediscan.data.readers import UPLOAD_BUDGET, DecodeBudget
from mediscan.explain import DEFAULT_ALPHA, DEFAULT_METHOD, explain, overlay, to_rgb
from mediscan.predict import Classifier, Prediction
from mediscan.run_folder import RunFolder
from mediscan.serve.batching import MicroBatcher
from mediscan.serve.uploads import (
    ENVELOPE_BYTES,
    ApiGuard,
    decode_upload,
    one_file_part,
    too_large_message,
    trim_heap,
)
from mediscan.transforms import Preprocess

STATIC = Path(__file__).parent / "static"
Upload = Annotated[UploadFile, File(description="The image file (multipart field 'file').")]
Method = Annotated[Literal["gradcam", "gradcam++"], Query(description="CAM method.")]
MODEL_CARD = {
    "intended_use": "Research and education: exploring how image classifiers behave on "
                    "medical images. Not for diagnosis, treatment or triage of patients.",
    "not_a_medical_device": True,
    "warning": "Not a medical device. Do not use these outputs for clinical decisions.",
    "limitations": [
        ("The model only knows the classes and the kind of images it was trained on; images "
         "from other scanners, protocols or populations may be confidently misclassified."),
        ("Probabilities are calibrated on the run's validation split only; the 'uncertain' "
         "flag marks predictions below the confidence threshold, not every error."),
        ("'Outside what this model knows' marks images whose features are far from every "
         "training class (a threshold set on the validation images so that at most 5% of "
         "ordinary images are flagged); a few ordinary images are flagged too, and an unflagged "
         "image can still be foreign."),
        ("Grad-CAM shows where the network's evidence for a class lies on the preprocessed "
         "image; it is a coarse heat map, not a segmentation or a reason a clinician can use."),
    ],
}


def create_app(classifier: Classifier, *, token: str | None = None,
               max_upload_bytes: int = 10 * 2**20, max_batch: int = 32, batch_wait_ms: float = 5,
               run_dir: str | Path | None = None, budget: DecodeBudget = UPLOAD_BUDGET,
               decode_workers: int | None = None) -> FastAPI:
    """The app serving `classifier`; `run_dir` adds its metrics.json to /api/model.

    Uploads are decoded within `budget` by at most `decode_workers` threads at once (default:
    the CPU count), so concurrent large uploads queue instead of multiplying memory."""
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mediscan-model")
    decoders = ThreadPoolExecutor(max_workers=decode_workers or os.cpu_count() or 1,
                                  thread_name_prefix="mediscan-decode")
    batcher = MicroBatcher(lambda images: classifier.predict_arrays(images, ["upload"] * len(images)),
                           executor, max_batch=max_batch, wait_ms=batch_wait_ms)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        batcher.close()
        executor.shutdown(wait=False, cancel_futures=True)
        decoders.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="mediscan", version=mediscan.__version__, lifespan=lifespan,
                  docs_url=None, redoc_url=None, description=MODEL_CARD["warning"])
    app.state.batcher = batcher
    app.add_middleware(ApiGuard, token=token or None,
                       max_body_bytes=max_upload_bytes + ENVELOPE_BYTES)
    _add_error_handlers(app)
    model_info = describe_model(classifier, run_dir)
    app.include_router(_api(classifier, batcher, executor, decoders, model_info,
                            max_upload_bytes=max_upload_bytes, budget=budget))
    _add_pages(app, classifier, batcher)
    return app


def _api(classifier: Classifier, batcher: MicroBatcher, executor: ThreadPoolExecutor,
         decoders: ThreadPoolExecutor, model_info: dict, *, max_upload_bytes: int,
         budget: DecodeBudget) -> APIRouter:
    router = APIRouter(prefix="/api")
    version = {key: model_info[key] for key in ("name", "architecture", "created")}

    async def read(request: Request, file: UploadFile) -> np.ndarray:
        one_file_part(await request.form())
        data = await file.read(max_upload_bytes + 1)
        if len(data) > max_upload_bytes:
            raise HTTPException(413, too_large_message(max_upload_bytes))
        job = partial(decode_upload, data, file.filename, budget=budget)
        return await asyncio.get_running_loop().run_in_executor(decoders, job)

    async def release(nbytes: int) -> None:
        await asyncio.get_running_loop().run_in_executor(decoders, trim_heap, nbytes)

    @router.post("/predict", summary="Classify one image (JPEG/PNG/BMP/TIFF/DICOM/NIfTI)")
    async def predict(request: Request, file: Upload) -> dict:
        image = await read(request, file)
        nbytes = image.nbytes
        prediction = await batcher.submit(image)
        del image
        await release(nbytes)
        return prediction_payload(prediction, version)

    @router.post("/explain", summary="Classify one image and return its Grad-CAM overlay")
    async def explain_image(request: Request, file: Upload, method: Method = DEFAULT_METHOD) -> dict:
        if classifier.model is None:
            raise HTTPException(501, "Grad-CAM needs the torch backend; serve without ONNX")
        image = await read(request, file)
        loop = asyncio.get_running_loop()
        job = partial(explain, classifier, image, method=method)
        cam, prediction = await loop.run_in_executor(executor, job)
        pngs = await loop.run_in_executor(decoders, _pngs, classifier.preprocess, image, cam)
        nbytes = image.nbytes
        del image, cam
        await release(nbytes)
        return {**prediction_payload(prediction, version), "method": method, **pngs}

    @router.get("/model", summary="Classes, input size, test metrics and the model card")
    async def model() -> dict:
        return model_info

    return router


def _pngs(preprocess: Preprocess, image: np.ndarray, cam: np.ndarray) -> dict[str, str]:
    preprocessed = preprocess(image)
    return {"image_png": png_base64(to_rgb(preprocessed)),
            "overlay_png": png_base64(overlay(preprocessed, cam, DEFAULT_ALPHA))}


def _add_pages(app: FastAPI, classifier: Classifier, batcher: MicroBatcher) -> None:
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/healthz", summary="Liveness, with micro-batching counters")
    async def healthz() -> dict:
        return {"status": "ok", "model": classifier.meta.get("name") or classifier.meta["model"],
                "batching": batcher.stats()}


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        content_type = request.headers.get("content-type", "")
        if request.method == "POST" and not content_type.startswith("multipart/form-data"):
            return JSONResponse({"detail": "send the image as multipart/form-data in the field "
                                           f"'file' (got content type {content_type!r})"}, 415)
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        hint = "; send the image as the multipart form field 'file'" if "file" in problems else ""
        return JSONResponse({"detail": f"bad request ({problems}){hint}"}, 400)


def describe_model(classifier: Classifier, run_dir: str | Path | None = None) -> dict:
    """What /api/model returns: identity, inputs, classes, headline test metrics, model card."""
    meta = classifier.meta
    return {
        "name": meta.get("name") or meta["model"], "architecture": meta["model"],
        "created": meta.get("created"), "classes": classifier.classes,
        "input_size": classifier.preprocess.size, "channels": classifier.preprocess.channels,
        "preprocess": classifier.preprocess.to_dict(), "temperature": classifier.temperature,
        "class_bias": classifier.class_bias.tolist(),
        "abstain_below": classifier.abstain_below, "backend": classifier.backend,
        "metrics": headline_metrics(run_dir), "model_card": MODEL_CARD,
        "training_data": meta.get("data", {}).get("counts"), "ood": meta.get("ood"),
    }


def headline_metrics(run_dir: str | Path | None) -> dict | None:
    """metrics.json's test headline (value and 95% CI per metric) and test size, if present."""
    run = RunFolder(run_dir) if run_dir is not None else None
    if run is None or not run.metrics_file.is_file():
        return None
    test = run.read_metrics().get("test", {})
    return {"test_images": test.get("n"), **test.get("headline", {})}


def prediction_payload(prediction: Prediction, version: dict) -> dict:
    """The JSON of one prediction."""
    return {"class": prediction.label, "probability": prediction.probability,
            "probabilities": prediction.probabilities, "uncertain": prediction.uncertain,
            "ood_score": prediction.ood_score, "outside": prediction.outside, "model": version}


def png_base64(rgb: np.ndarray) -> str:
    """Base64 of a PNG of a uint8 H x W x 3 image."""
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")
