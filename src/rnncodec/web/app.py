"""The viewer's HTTP side: one page, one upload endpoint, and byte downloads of cached results.

Nothing from a request is ever used as a file-system path: the page's assets are read once at
start-up and served from memory by name, and results live in a bounded in-memory cache under
random ids. Uploads are limited in bytes (while they stream in) and in pixels (from the image
header, before decoding), and identified by their content, never by their file name.
"""

from __future__ import annotations

import io
import threading
from pathlib import Path
from typing import Annotated, Literal

from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from PIL import Image, UnidentifiedImageError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..codec import Target
from ..errors import RnncError
from ..zoo import DEFAULT_MODEL, load_model
from .cache import ResultCache
from .compare import MAX_STEPS, Result, analyse
from .limits import MB, Limits
from .sample import sample_png

STATIC = Path(__file__).parent / "static"
MEDIA_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")  # what the sniffer accepts
FORM_OVERHEAD = 64 * 1024  # multipart boundaries, part headers and the small form fields
Kind = Literal["png", "jpeg", "webp", "rnnc"]
TargetKind = Literal["iterations", "bpp", "ms_ssim", "psnr"]


def _too_large(limit: int) -> HTTPException:
    size = f"{limit / MB:.3g} MB" if limit >= MB else f"{limit / 1024:.3g} KB"
    return HTTPException(413, f"the upload is larger than the limit of {size}")


class BodyLimit:
    """Refuses request bodies over a byte limit: at once by their Content-Length, or as soon as a
    streamed (chunked) body passes it, before the multipart parser spools it anywhere."""

    def __init__(self, app: ASGIApp, max_bytes: int, message_limit: int) -> None:
        self.app, self.max_bytes, self.message_limit = app, max_bytes, message_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_bytes:
            response = JSONResponse({"detail": _too_large(self.message_limit).detail}, 413)
            return await response(scope, receive, send)
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise _too_large(self.message_limit)  # FastAPI answers it like any HTTPException
            return message

        await self.app(scope, limited, send)


def _assets() -> dict[str, tuple[bytes, str]]:
    """The page's files, read once, by name."""
    return {p.name: (p.read_bytes(), MEDIA_TYPES[p.suffix]) for p in STATIC.iterdir()
            if p.suffix in MEDIA_TYPES}


def sniff(data: bytes, max_pixels: int) -> None:
    """Check the bytes are an image of an accepted format and size, from its header alone."""
    names = ", ".join(FORMATS[:-1]) + " or " + FORMATS[-1]
    try:
        with Image.open(io.BytesIO(data), formats=FORMATS) as image:
            width, height = image.size
    except Image.DecompressionBombError:
        raise HTTPException(422, f"the image has more than {max_pixels:,} pixels, this "
                                 "server's limit") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise HTTPException(415, f"the upload is not a {names} image") from None
    if width * height > max_pixels:
        raise HTTPException(422, f"the image has {width}×{height} = {width * height:,} pixels; "
                                 f"this server accepts at most {max_pixels:,}")


def _read_upload(file: UploadFile | None, sample: bool, limit: int) -> bytes:
    if sample:
        return sample_png()
    if file is None:
        raise HTTPException(422, "choose an image file, or use the sample image")
    data = file.file.read(limit + 1)
    if len(data) > limit:
        raise _too_large(limit)
    if not data:
        raise HTTPException(422, "the uploaded file is empty")
    return data


def _target(kind: TargetKind, value: float) -> Target:
    if kind == "iterations":
        if not value.is_integer() or not 1 <= value <= MAX_STEPS:
            raise HTTPException(422, f"iterations must be a whole number from 1 to {MAX_STEPS}")
        return Target(iterations=int(value))
    if not value > 0:
        raise HTTPException(422, f"{kind} must be positive")
    try:
        return Target(bpp=value if kind == "bpp" else None,
                      ms_ssim=value if kind == "ms_ssim" else None,
                      psnr=value if kind == "psnr" else None)
    except ValueError as e:
        raise HTTPException(422, str(e)) from None


def _validation_message(exc: RequestValidationError) -> str:
    return "; ".join(f"{e['loc'][-1]}: {e['msg']}" for e in exc.errors())


def create_app(model: str = DEFAULT_MODEL, limits: Limits | None = None) -> FastAPI:
    """The viewer as an ASGI app. The model (a registered name or a weights file) is loaded now,
    so that a wrong one fails at start-up rather than on the first upload."""
    limits = limits or Limits()
    load_model(model)
    assets = _assets()
    results: ResultCache[Result] = ResultCache(limits.cache_bytes)
    one_at_a_time = threading.Lock()  # encoding is CPU- and memory-bound: queue, don't pile up
    app = FastAPI(title="rnncodec viewer", docs_url=None, redoc_url=None)
    app.add_middleware(BodyLimit, max_bytes=limits.max_upload_bytes + FORM_OVERHEAD,
                       message_limit=limits.max_upload_bytes)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _validation_message(exc)}, 422)

    @app.exception_handler(RnncError)
    async def refused(_: Request, exc: RnncError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, 422)

    @app.get("/", response_class=HTMLResponse)
    def page() -> Response:
        return Response(assets["index.html"][0], media_type="text/html")

    @app.get("/assets/{name}")
    def asset(name: str) -> Response:
        if name not in assets:
            raise HTTPException(404, "no such asset")
        data, media_type = assets[name]
        return Response(data, media_type=media_type)

    @app.post("/api/encode")
    def encode(file: Annotated[UploadFile | None, File()] = None,
               sample: Annotated[bool, Form()] = False,
               target: Annotated[TargetKind, Form()] = "iterations",
               value: Annotated[float, Form(allow_inf_nan=False)] = 8.0) -> dict[str, object]:
        image = _read_upload(file, sample, limits.max_upload_bytes)
        sniff(image, limits.max_pixels)
        goal = _target(target, value)
        with one_at_a_time:
            result = analyse(image, goal, model, limits.max_pixels)
        return {"id": results.add(result)} | result.summary()

    def _result(rid: str) -> Result:
        result = results.get(rid)
        if result is None:
            raise HTTPException(404, "this result is no longer kept (the server holds only "
                                     "recent ones): compress the image again")
        return result

    @app.get("/api/results/{rid}/original")
    def original(rid: str) -> Response:
        return Response(_result(rid).original, media_type="image/png")

    @app.get("/api/results/{rid}/steps/{step}/{kind}")
    def step_file(rid: str, step: int, kind: Kind, download: bool = False) -> Response:
        result = _result(rid)
        if not 1 <= step <= len(result.steps):
            raise HTTPException(404, f"no step {step}: this result has 1 to {len(result.steps)}")
        if kind == "rnnc":
            return _attachment(result.file_at(step), "application/octet-stream",
                               f"rnncodec-{step}it.rnnc")
        coded = getattr(result.steps[step - 1], "rnnc" if kind == "png" else kind)
        if coded is None:
            raise HTTPException(404, f"{kind.upper()} cannot make a file this small")
        if download:
            return _attachment(coded.data, f"image/{kind}", f"rnncodec-{step}it.{kind}")
        return Response(coded.data, media_type=f"image/{kind}")

    return app


def _attachment(data: bytes, media_type: str, filename: str) -> Response:
    return Response(data, media_type=media_type,
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})
