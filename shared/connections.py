"""The clients every omnibind process needs, each created on first use, once — also when
several threads ask at the same moment — and never at import, so a forked worker builds its
own sockets after the fork."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import redis

from shared.config import Settings
from shared.objects.factory import open_object_store
from shared.objects.store import ObjectStore
from shared.redis_client import redis_client_from_settings
from shared.streams import DeadLetterStream
from shared.vectors.factory import open_vector_store
from shared.vectors.store import VectorStore

T = TypeVar("T")


class Connections:
    """Lazily built members; subclasses add their own with `_once`."""

    # Closed in this order by `close`: runtimes that flush through the clients come first.
    close_order: tuple[str, ...] = ("objects", "vectors", "redis")

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.RLock()
        self._built: dict[str, Any] = {}

    def _once(self, name: str, build: Callable[[], T]) -> T:
        with self._lock:
            if name not in self._built:
                self._built[name] = build()
            return self._built[name]  # type: ignore[no-any-return]

    def built(self) -> dict[str, Any]:
        """The members built so far (a snapshot; builds nothing)."""
        with self._lock:
            return dict(self._built)

    @property
    def redis(self) -> redis.Redis:
        return self._once("redis", lambda: redis_client_from_settings(self.settings))

    @property
    def dead_letters(self) -> DeadLetterStream:
        return self._once("dead_letters", lambda: DeadLetterStream.from_settings(self.redis, self.settings))

    @property
    def objects(self) -> ObjectStore:
        return self._once("objects", lambda: open_object_store(self.settings))

    @property
    def vectors(self) -> VectorStore:
        return self._once("vectors", lambda: open_vector_store(self.settings))

    def close(self) -> None:
        """Close what was built, in `close_order`; members are built anew on next use."""
        with self._lock:
            built, self._built = self._built, {}
        _close_all(built[name] for name in self.close_order if name in built)


def _close_all(members: Iterable[Any]) -> None:
    for member in members:
        member.close()
