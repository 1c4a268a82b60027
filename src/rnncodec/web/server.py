"""``rnncodec serve``'s process: uvicorn until SIGINT or SIGTERM, then the exit status a shell
or a service manager expects of a process stopped by that signal (128 + its number: 130, 143)."""

from __future__ import annotations

import signal
from types import FrameType

import uvicorn
from fastapi import FastAPI

from .app import GRACE_S

STOPPING = (signal.SIGINT, signal.SIGTERM)


class _Server(uvicorn.Server):
    """uvicorn's server, which also tells the app when a signal stops it, so that the app's open
    streams end at once rather than hold the shutdown up."""

    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self._app = app

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._app.state.life.stopping = True  # a plain flag: safe in a signal handler
        super().handle_exit(sig, frame)


def serve(app: FastAPI, host: str, port: int) -> int:
    """Serve the viewer until stopped by a signal; returns the exit status.

    uvicorn handles the signals while it runs (it stops accepting, gives open requests
    ``GRACE_S`` to end, then runs the app's shutdown, which cancels the encodes) and raises
    them again once done, for the handlers found before it: here, ones that note the signal.
    """
    received: list[int] = []

    def note(signum: int, _: FrameType | None) -> None:
        received.append(signum)

    previous = {s: signal.signal(s, note) for s in STOPPING}
    try:
        config = uvicorn.Config(app, host=host, port=port, timeout_graceful_shutdown=GRACE_S)
        _Server(config, app).run()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 128 + received[0] if received else 0
