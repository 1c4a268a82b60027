"""The only state the viewer keeps between requests: recent results under random ids."""

from __future__ import annotations

import secrets
import threading
from collections import OrderedDict
from typing import Generic, Protocol, TypeVar


class HasSize(Protocol):
    @property
    def nbytes(self) -> int: ...


T = TypeVar("T", bound=HasSize)


class ResultCache(Generic[T]):
    """An LRU map bounded in bytes. Ids are unguessable, so one user cannot fetch another's
    result by counting; the newest entry is always kept, even when it alone exceeds the bound."""

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._items: OrderedDict[str, T] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def add(self, item: T, key: str | None = None) -> str:
        """Keep ``item`` under ``key`` (a new random one unless given); returns the key."""
        key = key or secrets.token_urlsafe(16)
        with self._lock:
            self._items[key] = item
            self._bytes += item.nbytes
            while self._bytes > self._max_bytes and len(self._items) > 1:
                self._bytes -= self._items.popitem(last=False)[1].nbytes
        return key

    def get(self, key: str) -> T | None:
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
            return item

    def __len__(self) -> int:
        return len(self._items)
