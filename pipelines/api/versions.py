"""The active version of each model, as online scoring sees it: read at most once per ``ttl``.

Why: a compute call needs the version active now, and asking the database on every call cost
a round trip per request (and a pool connection taken from the lookups). A publish or rollback
reaches online scoring at most ``ttl`` seconds late (``ACTIVE_VERSION_TTL_S``, in the README);
lookups read ``predictions_current`` and are never cached. Only served models are remembered,
so requests for made-up model names cannot grow the cache.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

#: Longest time online scoring keeps answering with a version after it stopped being active.
ACTIVE_VERSION_TTL_S = 1.0


class ActiveVersions:
    """model -> active version, each entry reused for ``ttl`` seconds after the query that read it.

    Args:
        read: the database query (``ReadStore.active_version``): the version, or None if not served.
        ttl: seconds an answer is reused; the clock starts before the query, so no answer is
            served more than ``ttl`` after the moment it was true.
        clock: monotonic seconds (a test passes its own).
    """

    def __init__(
        self,
        read: Callable[[str], Awaitable[str | None]],
        *,
        ttl: float = ACTIVE_VERSION_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read
        self._ttl = ttl
        self._clock = clock
        self._known: dict[str, tuple[str, float]] = {}

    async def get(self, model: str) -> str | None:
        """The model's active version (at most ``ttl`` seconds old), or None when it is not served."""
        now = self._clock()
        known = self._known.get(model)
        if known is not None and now - known[1] < self._ttl:
            return known[0]
        version = await self._read(model)
        if version is None:
            self._known.pop(model, None)
        else:
            self._known[model] = (version, now)
        return version
