"""Uploads: the request guard (token, size limit, headers) and safe decoding of image bytes."""

from __future__ import annotations

import json
import secrets

import numpy as np
from starlette.datastructures import FormData, Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mediscan.data.readers import (
    DICOM_SUFFIXES,
    NIFTI_SUFFIXES,
    UPLOAD_BUDGET,
    DecodeBudget,
    ImageReadError,
    read_image_bytes,
    suffix_of,
)
from mediscan.heap import release_free_memory

ENVELOPE_BYTES = 64 * 1024  # multipart boundaries and part headers around the file
TRIM_ABOVE_BYTES = 4 * 2**20  # after a decoded image this large, freed heap goes back to the OS
SIGNATURES = ((0, b"\xff\xd8\xff"), (0, b"\x89PNG\r\n\x1a\n"), (0, b"BM"), (0, b"II*\x00"),
              (0, b"MM\x00*"), (0, b"GIF87a"), (0, b"GIF89a"), (8, b"WEBP"), (128, b"DICM"),
              (344, b"n+1\x00"))
SECURITY_HEADERS = [
    (b"content-security-policy",
     (b"default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
      b"form-action 'self'; frame-ancestors 'none'")),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]
UNSUPPORTED = ("not a supported image: send JPEG, PNG, BMP, TIFF, GIF, WebP, DICOM or NIfTI "
               "as the multipart form field 'file'")


class ApiGuard:
    """Pure ASGI middleware: bearer token on /api/*, body size limit, security headers.

    Checked before any of the body is read: the token (401) and a declared Content-Length
    over the limit (413); a streamed body is counted and refused (413) once over it."""

    def __init__(self, app: ASGIApp, *, token: str | None, max_body_bytes: int) -> None:
        self.app, self.token, self.max_body_bytes = app, token, max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = _with_headers(send)
        if scope["path"].startswith("/api/"):
            refusal = self._refusal(Headers(scope=scope))
            if refusal is not None:
                await _send_json(send, *refusal)
                return
            receive = _counting(receive, self.max_body_bytes)
        await self.app(scope, receive, send)

    def _refusal(self, headers: Headers) -> tuple[int, str, list] | None:
        if self.token is not None and not _token_ok(headers.get("authorization", ""), self.token):
            return 401, "missing or wrong bearer token (send 'Authorization: Bearer TOKEN')", \
                [(b"www-authenticate", b'Bearer realm="mediscan"')]
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            return 413, too_large_message(self.max_body_bytes - ENVELOPE_BYTES), []
        return None


def too_large_message(limit: int) -> str:
    return f"the upload is larger than the server's limit of {limit:,} bytes; downscale it"


def _token_ok(header: str, token: str) -> bool:
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and secrets.compare_digest(given.strip().encode(),
                                                                 token.encode())


def _counting(receive: Receive, limit: int) -> Receive:
    """`receive` that raises 413 once the streamed body exceeds `limit` bytes."""
    total = 0

    async def counted() -> Message:
        nonlocal total
        message = await receive()
        if message["type"] == "http.request":
            total += len(message.get("body", b""))
            if total > limit:
                raise HTTPException(413, too_large_message(limit - ENVELOPE_BYTES))
        return message

    return counted


def _with_headers(send: Send) -> Send:
    async def send_with_headers(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
        await send(message)

    return send_with_headers


async def _send_json(send: Send, status: int, detail: str, headers: list) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})


def safe_name(filename: str | None) -> str:
    """'upload' plus the client's suffix when it is a DICOM/NIfTI one; never used as a path."""
    suffix = suffix_of(filename or "")
    return "upload" + suffix if suffix in DICOM_SUFFIXES | NIFTI_SUFFIXES else "upload"


def looks_supported(data: bytes, name: str) -> bool:
    """True when the bytes start like a readable format (or the name says DICOM/NIfTI)."""
    if name != "upload":
        return True
    return any(data[offset:offset + len(magic)] == magic for offset, magic in SIGNATURES)


def one_file_part(form: FormData) -> None:
    """Refuse (400) a form with more than one 'file' part: which one to classify is ambiguous."""
    parts = len(form.getlist("file"))
    if parts > 1:
        raise HTTPException(400, f"the form has {parts} 'file' parts; send one image per request")


def decode_upload(data: bytes, filename: str | None, *,
                  budget: DecodeBudget = UPLOAD_BUDGET) -> np.ndarray:
    """Decoded uint8 image of an upload, or HTTPException 400 (empty/corrupt/over budget) / 415."""
    if not data:
        raise HTTPException(400, "the upload is empty (0 bytes); send the image file itself")
    name = safe_name(filename)
    if not looks_supported(data, name):
        raise HTTPException(415, UNSUPPORTED)
    try:
        return read_image_bytes(data, name=name, budget=budget)
    except ImageReadError as error:
        raise HTTPException(400, f"the image could not be read: {error.reason}") from None


def trim_heap(freed_bytes: int) -> bool:
    """After freeing `freed_bytes` >= TRIM_ABOVE_BYTES, return free heap pages to the OS (glibc's
    malloc_trim; elsewhere nothing), so the server's memory settles after large uploads."""
    return freed_bytes >= TRIM_ABOVE_BYTES and release_free_memory()
