"""Wall time and peak resident memory of one encode or decode, inside the running process.

tracemalloc sees only Python's allocator, not torch's or the image libraries', so memory is read
from the kernel instead: on Linux, writing 5 to /proc/self/clear_refs resets the process's peak
RSS (VmHWM) to its current RSS, so VmHWM read later is the peak since the reset. A ``Meter``
reports that peak minus the RSS at its start: the resident memory the call added on top of what
the process already held (interpreter, libraries, loaded model weights). Free heap memory is
handed back to the kernel first (glibc ``malloc_trim``), so that reused free lists do not hide a
call's allocations. Where the peak cannot be reset (not Linux), memory is reported as None.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")
_RESET_PEAK = "5"  # clear_refs command: reset the peak RSS to the current RSS (Linux ≥ 4.0)


def _status_kib(field: str) -> int:
    match = re.search(rf"^{field}:\s+(\d+) kB", _STATUS.read_text(), re.MULTILINE)
    assert match, f"{field} missing from {_STATUS}"
    return int(match.group(1))


@cache
def peak_rss_supported() -> bool:
    """Whether this process can reset and read its peak RSS."""
    try:
        _CLEAR_REFS.write_text(_RESET_PEAK)
        _status_kib("VmHWM")
    except (OSError, AssertionError):
        return False
    return True


@cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    return getattr(libc, "malloc_trim", None)


class Meter:
    """Time and peak RSS growth from construction on; ``paused`` excludes the evaluator's own work.

    Readings are cumulative, so one pass over a progressive codec can be read after each step.
    """

    def __init__(self) -> None:
        self.supported = peak_rss_supported()
        if self.supported:
            trim = _malloc_trim()
            if trim:
                trim(0)
            self.base = _status_kib("VmRSS")
            _CLEAR_REFS.write_text(_RESET_PEAK)
        self.excluded = 0.0
        self.start = time.perf_counter()

    def seconds(self) -> float:
        return time.perf_counter() - self.start - self.excluded

    def peak_rss(self) -> int | None:
        """Bytes of peak RSS above the RSS at the start."""
        if not self.supported:
            return None
        return max(0, _status_kib("VmHWM") - self.base) * 1024

    @contextmanager
    def paused(self) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            self.excluded += time.perf_counter() - t
