"""The viewer's HTTP side: one page, an upload endpoint that queues the work and answers at once,
a stream of each upload's progress, byte downloads of its results, and a decoder for .rnnc files
(or their first iterations) as they arrive.

Nothing from a request is ever used as a file-system path: the page's assets are read once at
start-up and served from memory by name, and results live in memory under random ids (running
ones while they run, then a bounded cache). Uploads are limited in bytes (while they stream in)
and in pixels (from the image header, before decoding), and identified by their content, never
by their file name. Encodes and decodes run on a fixed pool of workers behind a bounded queue
(jobs.py): a full queue is refused with 503, not left to pile up.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import secrets
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import torch
from fastapi import FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from PIL import Image, UnidentifiedImageError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..codec import Target, compress, decompress
from ..errors import RnncError
from ..files import info
from ..images import load_image, to_image
from ..metrics import ms_ssim
from ..zoo import DEFAULT_MODEL, load_model
from .cache import ResultCache
from .compare import MAX_STEPS, MEDIA_TYPES, PEERS, Peer, Result, analyse, peers, png, shown
from .jobs import Busy, Cancelled, JobPool, Ticket
from .limits import MB, Limits
from .sample import sample_png

STATIC = Path(__file__).parent / "static"
MEDIA = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")  # what the sniffer accepts
FORM_OVERHEAD = 64 * 1024  # multipart boundaries, part headers and the small form fields
POLL_S = 0.05  # how often an event stream looks for news
GRACE_S = 3  # how long `serve` lets open streams finish when stopped
Kind = Literal["png", "rnnc", "blocks", "jpeg", "webp", "avif", "jxl"]
TargetKind = Literal["iterations", "bpp", "ms_ssim", "psnr"]
log = logging.getLogger("rnncodec.web")


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
    return {p.name: (p.read_bytes(), MEDIA[p.suffix]) for p in STATIC.iterdir()
            if p.suffix in MEDIA}


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
    _check_pixels(width, height, max_pixels, "the image")


def _check_pixels(width: int, height: int, max_pixels: int, what: str) -> None:
    if width * height > max_pixels:
        raise HTTPException(422, f"{what} has {width}×{height} = {width * height:,} pixels; "
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


def _busy(e: Busy) -> HTTPException:
    return HTTPException(503, str(e), headers={"Retry-After": "30"})


def _attachment(data: bytes, media_type: str, filename: str) -> Response:
    return Response(data, media_type=media_type,
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})


class Lifecycle:
    """Whether the server is stopping: set from uvicorn's signal handler (server.py), read by the
    streams, which then end at once instead of holding the shutdown up."""

    def __init__(self) -> None:
        self.stopping = False


async def _trickle(data: bytes, rate: int, life: Lifecycle) -> AsyncIterator[bytes]:
    """The bytes at about ``rate`` bytes per second, in tenths of a second's worth: a slow link,
    to watch a file decode as it arrives."""
    piece = max(1, rate // 10)
    for start in range(0, len(data), piece):
        if start:
            await asyncio.sleep(0.1)
        if life.stopping:
            return
        yield data[start:start + piece]


def _ndjson(events: Iterator[dict[str, object]]) -> bytes:
    return b"".join(json.dumps(e, separators=(",", ":")).encode() + b"\n" for e in events)


class Uploads:
    """Results by id: running ones (at most the pool's workers plus its queue), then finished
    ones in the byte-bounded cache."""

    def __init__(self, cache_bytes: int) -> None:
        self.active: dict[str, tuple[Result, Ticket]] = {}
        self.done: ResultCache[Result] = ResultCache(cache_bytes)

    def get(self, rid: str) -> Result:
        entry = self.active.get(rid)
        result = entry[0] if entry else self.done.get(rid)
        if result is None:
            raise HTTPException(404, "this result is no longer kept (the server holds only "
                                     "recent ones): compress the image again")
        return result

    def ticket(self, rid: str) -> Ticket | None:
        entry = self.active.get(rid)
        return entry[1] if entry else None

    def retire(self, rid: str, result: Result) -> None:
        self.done.add(result, key=rid)  # cached before it leaves ``active``: never missing
        self.active.pop(rid, None)


def _warm_up(model: str) -> None:
    """Code a small image and measure one once, so that the first upload does not pay the
    one-off set-up."""
    compress(np.zeros((32, 32, 3), np.uint8), iterations=1, model=model)
    flat = np.zeros((192, 192, 3), np.uint8)
    ms_ssim(flat, flat)


def _one_thread() -> None:
    """Each worker computes on one core (the networks do anyway, engine.network_step): the
    workers share the cores, and torch's threads would spin against each other when busy."""
    torch.set_num_threads(1)


def create_app(model: str = DEFAULT_MODEL, limits: Limits | None = None,
               codecs: tuple[str, ...] = tuple(PEERS)) -> FastAPI:
    """The viewer as an ASGI app. The model (a registered name or a weights file) is loaded now,
    so that a wrong one fails at start-up rather than on the first upload; ``codecs`` are the
    peers compared at equal size (those unavailable here are shown as such)."""
    limits = limits or Limits()
    name = load_model(model).name
    _warm_up(model)
    assets = _assets()
    available: dict[str, Peer] = peers(codecs)
    uploads = Uploads(limits.cache_bytes)
    jobs = JobPool(limits.workers, limits.queue, _one_thread)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        jobs.close()
        for result, _ticket in list(uploads.active.values()):
            result.fail("the server stopped before this image was done")

    app = FastAPI(title="rnncodec viewer", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.life = life = Lifecycle()
    app.add_middleware(BodyLimit, max_bytes=limits.max_upload_bytes + FORM_OVERHEAD,
                       message_limit=limits.max_upload_bytes)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _validation_message(exc)}, 422)

    @app.exception_handler(RnncError)
    async def refused(_: Request, exc: RnncError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, 422)

    @app.exception_handler(MemoryError)
    async def no_memory(_: Request, exc: MemoryError) -> JSONResponse:
        return JSONResponse({"detail": "the server ran out of memory for this request"}, 503)

    @app.exception_handler(Exception)
    async def failed(request: Request, exc: Exception) -> JSONResponse:
        """A bug: the client gets one line of JSON, the log the traceback."""
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return JSONResponse({"detail": f"the server failed ({type(exc).__name__}); its log "
                                       "has details"}, 500)

    @app.get("/", response_class=HTMLResponse)
    def page() -> Response:
        return Response(assets["index.html"][0], media_type="text/html")

    @app.get("/assets/{name}")
    def asset(name: str) -> Response:
        if name not in assets:
            raise HTTPException(404, "no such asset")
        data, media_type = assets[name]
        return Response(data, media_type=media_type)

    def run(rid: str, result: Result, original: Image.Image, goal: Target,
            ticket: Ticket) -> None:
        try:
            ticket.check()
            result.start()
            analyse(result, original, goal, model, ticket.check)
        except Cancelled as e:
            result.fail(str(e))
        except RnncError as e:
            result.fail(str(e))
        except MemoryError:
            result.fail("the server ran out of memory for this image")
        except Exception as e:  # a bug: the page gets one line, the log the traceback
            log.exception("compressing %s failed", rid)
            result.fail(f"compressing failed ({type(e).__name__}); the server log has details")
        finally:
            uploads.retire(rid, result)

    @app.post("/api/encode", status_code=202)
    def encode(file: Annotated[UploadFile | None, File()] = None,
               sample: Annotated[bool, Form()] = False,
               target: Annotated[TargetKind, Form()] = "iterations",
               value: Annotated[float, Form(allow_inf_nan=False)] = 8.0) -> dict[str, object]:
        """Check the upload and queue its encode; the answer names the result to follow."""
        image = _read_upload(file, sample, limits.max_upload_bytes)
        sniff(image, limits.max_pixels)
        goal = _target(target, value)
        rgb, gray = load_image(image, limits.max_pixels)
        original = to_image(rgb, gray)
        result = Result(original, name, available)
        rid, ticket = secrets.token_urlsafe(16), Ticket()
        uploads.active[rid] = (result, ticket)
        try:
            jobs.submit(lambda t: run(rid, result, original, goal, t), ticket)
        except Busy as e:
            uploads.active.pop(rid, None)
            raise _busy(e) from None
        return {"id": rid, "position": jobs.position(ticket)}

    @app.get("/api/results/{rid}")
    def summary(rid: str) -> dict[str, object]:
        result = uploads.get(rid)
        ticket = uploads.ticket(rid)
        return {"id": rid} | result.summary() | {
            "position": jobs.position(ticket) if ticket else 0}

    @app.delete("/api/results/{rid}", status_code=204)
    def cancel(rid: str) -> Response:
        """Stop an encode nobody follows any more (the page sends this for a new upload)."""
        uploads.get(rid)
        ticket = uploads.ticket(rid)
        if ticket is not None:
            ticket.cancel("cancelled: a newer upload replaced this one")
        return Response(status_code=204)

    @app.get("/api/results/{rid}/events")
    async def events(rid: str) -> StreamingResponse:
        """The upload's events as JSON lines, from the first, as they happen; ``queued`` events
        tell its place in line while it waits."""
        result = uploads.get(rid)

        async def lines() -> AsyncIterator[bytes]:
            sent, place = 0, 0
            while True:
                stopping = life.stopping  # read once: a signal may set it at any time
                new, finished = result.events(sent)  # all of them, once finished
                sent += len(new)
                ticket = uploads.ticket(rid)
                position = jobs.position(ticket) if ticket and result.state == "queued" else 0
                if position and position != place:
                    new.append({"event": "queued", "position": position})
                place = position
                if stopping and not finished:
                    new.append({"event": "failed", "detail": "the server is stopping; this "
                                                             "image was not finished"})
                if new:
                    yield _ndjson(iter(new))
                if finished or stopping:
                    return
                await asyncio.sleep(POLL_S)

        return StreamingResponse(lines(), media_type="application/x-ndjson",
                                 headers={"Cache-Control": "no-store"})

    @app.get("/api/results/{rid}/original")
    def original_png(rid: str) -> Response:
        return Response(uploads.get(rid).original, media_type="image/png")

    @app.get("/api/results/{rid}/steps/{step}/{kind}", response_model=None)
    def step_file(rid: str, step: int, kind: Kind, download: bool = False,
                  as_png: Annotated[bool, Query(alias="png")] = False,
                  rate: Annotated[int | None, Query(ge=64, le=1 << 30)] = None,
                  ) -> Response | StreamingResponse:
        """One step as the page shows it (``png``: the rnncodec reconstruction; ``blocks``: the
        shade over the blocks its iteration left uncoded; a peer's file, or with ``png=1`` that
        file decoded), or as a download; ``rate`` trickles an .rnnc."""
        result = uploads.get(rid)
        if not 1 <= step <= len(result.steps):
            so_far = f"1 to {len(result.steps)}" if result.steps else "none yet"
            raise HTTPException(404, f"no step {step}: this result has {so_far}")
        if kind == "rnnc":
            data = result.file_at(step)
            if rate is not None:
                return StreamingResponse(_trickle(data, rate, life),
                                         media_type="application/octet-stream",
                                         headers={"Content-Length": str(len(data))})
            return _attachment(data, "application/octet-stream", f"rnncodec-{step}it.rnnc")
        if kind == "blocks":
            shade = result.blocks_png(step)
            if shade is None:
                raise HTTPException(404, "this file codes every block at every iteration")
            return Response(shade, media_type="image/png")
        if kind == "png":
            data, media_type = result.steps[step - 1].rnnc.data, "image/png"
        else:
            data, media_type = _peer_file(result, step, kind, as_png)
        if download:
            suffix = "png" if media_type == "image/png" else kind
            return _attachment(data, media_type, f"{'rnncodec' if kind == 'png' else kind}-"
                                                 f"{step}it.{suffix}")
        return Response(data, media_type=media_type)

    def _peer_file(result: Result, step: int, kind: str, as_png: bool) -> tuple[bytes, str]:
        peer = result.codecs.get(kind)
        if peer is None or peer.codec is None:
            why = f": {peer.reason}" if peer and peer.reason else ""
            raise HTTPException(404, f"{PEERS[kind][1]} is not available on this server{why}")
        peers_of_step = result.steps[step - 1].peers
        if kind not in peers_of_step:
            raise HTTPException(404, f"{peer.label} for step {step} is not ready yet")
        coded = peers_of_step[kind]
        if coded is None:
            raise HTTPException(404, f"{peer.label} cannot make a file this small")
        if as_png:
            return shown(peer.codec, coded.data), "image/png"
        return coded.data, MEDIA_TYPES[kind]

    @app.post("/api/decode")
    async def decode(request: Request) -> Response:
        """Decode an .rnnc file, or the first iterations of one (any cut after a whole
        iteration), to PNG; the page sends what has arrived of a download so far."""
        data = await request.body()
        if not data:
            raise HTTPException(422, "send the bytes of an .rnnc file (or its first iterations)")
        header = info(data).header  # FormatError, answered 422, for anything else
        _check_pixels(header.width, header.height, limits.max_pixels, "the file's image")
        try:
            _, future = jobs.submit(lambda _: _decode_png(data))
        except Busy as e:
            raise _busy(e) from None
        picture, iterations = await asyncio.wrap_future(future)
        return Response(picture, media_type="image/png",
                        headers={"X-Iterations": str(iterations), "Cache-Control": "no-store"})

    def _decode_png(data: bytes) -> tuple[bytes, int]:
        return png(decompress(data, model=model)), info(data).iterations

    return app
