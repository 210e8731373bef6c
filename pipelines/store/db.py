"""Connections and schema: the configured server, or an embedded one started on demand."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg

from pipelines.errors import StoreError, flat_message
from pipelines.store.urls import libpq_url

#: The read-only role of sql/003_readonly_role.sql (the lookup API and SQL readers take it).
READER_ROLE = "predcache_reader"
CONNECT_TIMEOUT_S = 10
_embedded: dict[Path, Any] = {}


def embedded_url(pgdata: Path) -> str:
    """Start (or join) the embedded PostgreSQL whose data lives in ``pgdata``; return its URL.

    The server stops when the last process that started or joined it exits, and keeps its
    data in ``pgdata`` for the next command. Its socket is private (pipelines.store.embedded).
    """
    from pipelines.store.embedded import EmbeddedServer

    pgdata = pgdata.expanduser().absolute()
    server = _embedded.get(pgdata)
    if server is None:
        server = EmbeddedServer(pgdata)
        try:
            server.start()
        except StoreError as exc:
            raise StoreError(
                f"the embedded PostgreSQL in {server.pgdata} did not start: {exc}; see {server.pgdata}/log "
                "or set PREDCACHE_DATABASE_URL to a server of yours"
            ) from exc
        _embedded[pgdata] = server
    return str(server.get_uri())


def stop_embedded(pgdata: Path, *, delete: bool = False) -> None:
    """This process is done with the embedded server of ``pgdata`` (stopped if no other process uses it)."""
    server = _embedded.pop(pgdata.expanduser().absolute(), None)
    if server is not None:
        server.cleanup(delete=delete)


def resolve_url(database_url: str | None, embedded_pgdata: Path) -> str:
    """The configured URL (as libpq reads it), or the embedded server's when none is configured."""
    return libpq_url(database_url) if database_url else embedded_url(embedded_pgdata)


def connect(url: str, *, autocommit: bool = False) -> psycopg.Connection[Any]:
    """Open a connection; a failure becomes one line that says what to check.

    Raises:
        StoreError: the server cannot be reached or refused the login.
    """
    try:
        return psycopg.connect(
            libpq_url(url),
            autocommit=autocommit,
            connect_timeout=CONNECT_TIMEOUT_S,
            application_name="predcache",
        )
    except psycopg.OperationalError as exc:
        raise unreachable(exc) from exc


def unreachable(exc: BaseException) -> StoreError:
    """The error for a driver's failed connection (psycopg, psycopg2): its whole message on one line."""
    return StoreError(f"cannot connect to PostgreSQL ({flat_message(exc)}); check PREDCACHE_DATABASE_URL")


@contextlib.contextmanager
def connection(url: str, *, autocommit: bool = False) -> Iterator[psycopg.Connection[Any]]:
    """A connection that is always closed (and rolled back if the block raised)."""
    conn = connect(url, autocommit=autocommit)
    try:
        yield conn
        if not autocommit:
            conn.commit()
    except BaseException:
        if not conn.closed and not autocommit:
            conn.rollback()
        raise
    finally:
        conn.close()


def migrate(url: str, *, folder: Path | None = None) -> list[str]:
    """Bring the cache's schema to the newest ``sql/NNN_name.sql``; return the file names applied now.

    The one entry point of migrations (``pipelines.store.migrations`` holds how: Alembic, one
    revision per file, checksums, an advisory lock). Safe to call concurrently and repeatedly.

    Raises:
        MigrationError: an applied file was edited since, or the cache is newer than this predcache.
        StoreError: the server cannot be reached.
    """
    from pipelines.store.migrations import migrate as upgrade

    return upgrade(url, folder=folder)
