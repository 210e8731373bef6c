"""Opening the cache: the configured or embedded server, with the schema applied once per process."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import psycopg

from pipelines.settings import Settings
from pipelines.store.db import connection, migrate, resolve_url

_migrated: set[str] = set()


def cache_url(settings: Settings) -> str:
    """The cache's URL (starting the embedded server if needed), with the schema applied once per process."""
    url = resolve_url(settings.database_url, settings.embedded_pgdata)
    if url not in _migrated:
        migrate(url)
        _migrated.add(url)
    return url


@contextlib.contextmanager
def cache_connection(settings: Settings, *, autocommit: bool = True) -> Iterator[psycopg.Connection[Any]]:
    """A connection to the cache (see :func:`cache_url`), closed when the block ends."""
    with connection(cache_url(settings), autocommit=autocommit) as conn:
        yield conn
