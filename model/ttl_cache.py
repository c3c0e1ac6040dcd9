"""Answers reused for a while: {key: value} whose entries expire a time after they were put."""

from __future__ import annotations

import time

MISSING = object()  # what `get` answers for a key without a live entry, unless told otherwise


class TtlCache:
    """Entries live `ttl` seconds (or the ttl given to `put`), on the monotonic clock."""

    def __init__(self, ttl: float = 0.0, clock=time.monotonic):
        self.ttl, self._clock = ttl, clock
        self._entries: dict = {}  # key -> (put at, expires at, value)

    def get(self, key, default=MISSING, max_age: float | None = None):
        """The live value of `key`, else `default`; `max_age`: only if put less than that many seconds ago."""
        put_at, expires, value = self._entries.get(key, (0.0, 0.0, MISSING))
        now = self._clock()
        if value is MISSING or now >= expires or (max_age is not None and now - put_at >= max_age):
            return default
        return value

    def put(self, key, value, ttl: float | None = None) -> None:
        now = self._clock()
        self._entries[key] = (now, now + (self.ttl if ttl is None else ttl), value)

    def forget(self, key) -> None:
        self._entries.pop(key, None)

    def clear(self) -> None:
        self._entries.clear()
