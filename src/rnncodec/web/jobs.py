"""The viewer's CPU-bound work (encodes, decodes) on a fixed number of threads behind a
bounded queue, so that one upload never holds the requests that follow it, and a flood of
uploads is refused at once instead of piling up in memory."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class Busy(Exception):
    """Every worker is busy and the queue is full (or the server is stopping)."""


class Cancelled(Exception):
    """The job was cancelled (its client left, or the server is stopping): raised from inside
    the job, with the reason."""


class Ticket:
    """One submitted job: its place in line while it waits, and a flag it checks while it runs."""

    def __init__(self) -> None:
        self._cancelled = threading.Event()
        self.reason = ""

    def cancel(self, reason: str) -> None:
        if not self.cancelled:
            self.reason = reason
            self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def check(self) -> None:
        """Raise Cancelled if the job should stop; jobs call it first and between steps."""
        if self.cancelled:
            raise Cancelled(self.reason)


class JobPool:
    """``workers`` threads (each set up by ``initializer``) and at most ``queue`` jobs waiting
    for one."""

    def __init__(self, workers: int, queue: int,
                 initializer: Callable[[], object] | None = None) -> None:
        self.workers, self.queue = workers, queue
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="rnncodec-job",
                                            initializer=initializer)
        self._lock = threading.Lock()
        self._waiting: list[Ticket] = []
        self._running: set[Ticket] = set()
        self._closed = False

    def submit(self, fn: Callable[[Ticket], T],
               ticket: Ticket | None = None) -> tuple[Ticket, Future[T]]:
        """Queue ``fn(ticket)`` (a new ticket unless given); Busy when ``workers + queue`` jobs
        are already admitted."""
        ticket = ticket or Ticket()
        with self._lock:
            if self._closed:
                raise Busy("the server is shutting down")
            if len(self._waiting) + len(self._running) >= self.workers + self.queue:
                raise Busy(f"the server is busy: {len(self._waiting)} jobs are waiting for "
                           f"its {self.workers} workers; try again in a minute")
            self._waiting.append(ticket)
        return ticket, self._executor.submit(self._run, fn, ticket)

    def _run(self, fn: Callable[[Ticket], T], ticket: Ticket) -> T:
        with self._lock:
            self._waiting.remove(ticket)
            self._running.add(ticket)
        try:
            return fn(ticket)
        finally:
            with self._lock:
                self._running.discard(ticket)

    def position(self, ticket: Ticket) -> int:
        """1 for the next job to start, 2 for the one after...; 0 once it has started."""
        with self._lock:
            return self._waiting.index(ticket) + 1 if ticket in self._waiting else 0

    def close(self) -> None:
        """Refuse new jobs, drop the waiting ones and ask the running ones to stop."""
        with self._lock:
            self._closed = True
            for ticket in [*self._waiting, *self._running]:
                ticket.cancel("the server stopped before this job was done")
        self._executor.shutdown(wait=False, cancel_futures=True)
