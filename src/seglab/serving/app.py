"""The HTTP API and the inference page, as a FastAPI application.

    GET  /          the inference page (one self-contained HTML file; nothing from a CDN)
    GET  /health    {"status": "ok", "models": [...], "batches": ..., "mean_batch": ...}
    GET  /models    each model's classes, colours, input size, backend and version
    POST /predict   an image (the body, or the multipart field `image`) -> its mask

`/predict` takes `model=` (default: the first served), `format=index|color|json` (default: by
the Accept header, else index), `mode=auto|resize|whole|slide` and `flip=true|false` (defaults: the
server's), and `masks=true` (json: both PNGs as base64 too). Every error a client can cause is
a JSON `{"error": ...}` with a 4xx status; the server then serves the next request as usual.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser

from seglab import __version__
from seglab.data.dataset import decode_image
from seglab.data.images import check_image, max_image_pixels
from seglab.errors import UserError
from seglab.prediction import Predictor, Prepared
from seglab.prediction.predictor import to_labels
from seglab.serving import responses
from seglab.serving.batcher import Batcher, BatchOptions, Busy
from seglab.serving.models import PredictOptions, ServedModel

log = logging.getLogger("seglab.serve")


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Limits:
    max_upload_bytes: int = 32 * 2**20
    max_image_pixels: int = field(default_factory=max_image_pixels)


def create_app(
    models: dict[str, ServedModel], batching: BatchOptions, limits: Limits | None = None
) -> FastAPI:
    limits = limits or Limits()
    page = resources.files("seglab.serving").joinpath("page.html").read_text("utf-8")
    state: dict[str, Batcher] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        state["batcher"] = Batcher(batching)
        yield
        await state["batcher"].close()

    app = FastAPI(title="seglab", version=__version__, lifespan=lifespan, docs_url=None)

    @app.exception_handler(ApiError)
    async def api_error(_: Request, err: ApiError) -> JSONResponse:
        return JSONResponse({"error": str(err)}, status_code=err.status)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, err: HTTPException) -> JSONResponse:  # 404, 405 routes
        return JSONResponse({"error": str(err.detail)}, status_code=err.status_code)

    @app.exception_handler(Exception)
    async def server_error(_: Request, err: Exception) -> JSONResponse:  # a bug, not the client
        log.error("predict failed", exc_info=err)
        return JSONResponse(
            {"error": f"internal error: {type(err).__name__}: {err}"}, status_code=500
        )

    @app.get("/", response_class=HTMLResponse)
    async def index() -> str:
        return page

    @app.get("/health")
    async def health() -> dict[str, Any]:
        batches = state["batcher"].batches
        return {
            "status": "ok",
            "models": list(models),
            "batches": len(batches),
            "mean_batch": sum(batches) / len(batches) if batches else None,
        }

    @app.get("/models")
    async def list_models() -> dict[str, Any]:
        return {
            "default": next(iter(models)),
            "models": [m.describe() for m in models.values()],
            "seglab_version": __version__,
        }

    @app.post("/predict")
    async def predict(request: Request) -> Response:
        started = time.perf_counter()
        params = request.query_params
        model = _model(models, params.get("model"))
        options = _options(model, params)
        try:
            kind = responses.choose_format(params.get("format"), request.headers.get("accept"))
        except ValueError as err:
            raise ApiError(400, str(err)) from None
        masks = _flag(params.get("masks"), False, "masks")
        data, name = await _upload(request, limits.max_upload_bytes)
        try:
            predictor = model.with_options(options)
        except UserError as err:  # e.g. mode=whole on an ONNX model of a fixed size
            raise ApiError(400, str(err)) from None
        prepared = await run_in_threadpool(_prepare, data, name, predictor, limits)
        try:
            labels = await state["batcher"].submit(
                (model.name, options), partial(_labels, predictor), prepared
            )
        except Busy as err:
            raise ApiError(503, f"the server is busy ({err}); retry shortly") from None
        headers = {
            "X-Seglab-Model": model.name,
            "X-Seglab-Seconds": f"{time.perf_counter() - started:.4f}",
        }
        if kind == "json":
            body = await run_in_threadpool(
                responses.json_body, labels, predictor.info, model.name,
                {"mode": options.mode, "flip": options.flip}, masks,
            )  # fmt: skip
            return JSONResponse(body, headers=headers)
        encode = (
            responses.index_png
            if kind == "index"
            else partial(responses.color_png, info=predictor.info)
        )
        png = await run_in_threadpool(encode, labels)
        return Response(png, media_type="image/png", headers=headers)

    return app


def _model(models: dict[str, ServedModel], name: str | None) -> ServedModel:
    if name is None:
        return next(iter(models.values()))
    if name not in models:
        raise ApiError(404, f"model={name!r} is not served; served: {', '.join(models)}")
    return models[name]


def _flag(text: str | None, default: bool, key: str) -> bool:
    if text is None or text == "":
        return default
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ApiError(400, f"{key}={text!r}: give true or false")


def _options(model: ServedModel, params: Any) -> PredictOptions:
    defaults = model.defaults
    try:
        return PredictOptions(
            mode=params.get("mode") or defaults.mode,
            flip=_flag(params.get("flip"), defaults.flip, "flip"),
        )
    except UserError as err:
        raise ApiError(400, str(err)) from None


async def _upload(request: Request, limit: int) -> tuple[bytes, str]:
    """The uploaded file's bytes and a name for messages: the body itself, or the `image`
    field (else the only file) of a multipart form, as `curl -F image=@photo.jpg` sends."""
    chunks, size = [], 0
    async for chunk in request.stream():  # read to the end, keeping at most `limit` bytes
        size += len(chunk)
        if size <= limit:
            chunks.append(chunk)
    if size > limit:
        raise ApiError(
            413,
            f"the upload is {size} bytes, over the server's limit of {limit} bytes: send a "
            "smaller image, or start the server with a larger max_upload_mb=",
        )
    data = b"".join(chunks)
    if not data:
        raise ApiError(
            400,
            "empty body: send the image file as the request body (curl --data-binary "
            "@photo.jpg) or as the form field `image` (curl -F image=@photo.jpg)",
        )
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        return data, "upload"
    return await _form_file(request, data)


async def _form_file(request: Request, data: bytes) -> tuple[bytes, str]:
    async def body() -> AsyncIterator[bytes]:
        yield data
        yield b""

    try:
        form = await MultiPartParser(request.headers, body()).parse()
    except MultiPartException as err:
        raise ApiError(400, f"cannot read the multipart form: {err}") from None
    files = [value for value in form.values() if isinstance(value, UploadFile)]
    upload = form.get("image") if isinstance(form.get("image"), UploadFile) else None
    if upload is None and len(files) == 1:
        upload = files[0]
    if upload is None:
        raise ApiError(
            400, f"the form has {len(files)} file field(s) and none named `image`: send the "
            "image as the field `image`",
        )  # fmt: skip
    content = await upload.read()
    if not content:
        raise ApiError(400, f"the form field holds an empty file ({upload.filename or 'no name'})")
    return content, upload.filename or "upload"


def _prepare(data: bytes, name: str, predictor: Predictor, limits: Limits) -> Prepared:
    """Check and decode an upload exactly as predict.py reads a file, then do the Predictor's
    per-image preparation, here in the thread pool rather than in the inference thread."""
    try:
        check_image(Path(name), limits.max_image_pixels, data=data, decode_all=False)
        image = decode_image(data, name, predictor.info.reader, predictor.info.in_channels)
    except UserError as err:
        status = 413 if "over the limit" in str(err) else 400
        raise ApiError(status, str(err)) from None
    return predictor.preparer(image)


def _labels(predictor: Predictor, batch: list[Prepared]) -> list[np.ndarray]:
    """One forward pass for the batch: class-index masks at each image's own size."""
    return [to_labels(logits, predictor.num_classes) for logits in predictor.logits(batch)]
