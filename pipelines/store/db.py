"""Connections and schema: the configured server, or an embedded one started on demand."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from pipelines.errors import StoreError, TransientStoreError, flat_message
from pipelines.store.urls import libpq_url

#: The read-only role of sql/003_readonly_role.sql (the lookup API and SQL readers take it).
READER_ROLE = "predcache_reader"
CONNECT_TIMEOUT_S = 10
_embedded: dict[Path, Any] = {}

#: A lock wait longer than this fails (retryably) instead of queueing behind a frozen writer.
LOCK_TIMEOUT_MS = 30_000
#: A session idle inside a transaction this long is ended by the server, freeing its locks.
IDLE_IN_TRANSACTION_TIMEOUT_MS = 120_000
#: TCP keepalives: a peer gone silent is found dead after about idle + interval * count seconds
#: (75 s), not the kernel default of about two hours.
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 15, "keepalives_count": 3}


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


def session_options(url: str) -> dict[str, Any]:
    """Connection parameters every predcache session uses: timeouts and TCP keepalives.

    The server-side settings go first in ``options``, so an ``options`` of the URL (e.g.
    ``-c lock_timeout=5s``) comes later and wins.
    """
    given = conninfo_to_dict(url).get("options") or ""
    ours = (
        f"-c lock_timeout={LOCK_TIMEOUT_MS} "
        f"-c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_TIMEOUT_MS}"
    )
    return {
        "connect_timeout": 10,
        "application_name": "predcache",
        "options": f"{ours} {given}".strip(),
        **KEEPALIVES,
    }


def connect(url: str, *, autocommit: bool = False) -> psycopg.Connection[Any]:
    """Open a connection; a failure becomes one line that says what to check.

    Every session sets ``lock_timeout`` and ``idle_in_transaction_session_timeout`` and uses
    TCP keepalives (``session_options``): a frozen or vanished peer costs seconds, not hours.

    Raises:
        StoreError: the server cannot be reached or refused the login.
    """
    try:
        url = libpq_url(url)
        return psycopg.connect(url, autocommit=autocommit, **session_options(url))
    except psycopg.OperationalError as exc:
        raise unreachable(exc) from exc


def unreachable(exc: BaseException) -> StoreError:
    """The error for a driver's failed connection (psycopg, psycopg2): its whole message on one line.

    Transient to retriers (a server restarting); a bad URL fails the CLI before any worker runs.
    """
    return TransientStoreError(
        f"cannot connect to PostgreSQL ({flat_message(exc)}); check PREDCACHE_DATABASE_URL"
    )


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
    from pipelines.store.schema import at_head

    if at_head(url, folder=folder):  # the common case, without loading Alembic (about a second)
        return []
    from pipelines.store.migrations import migrate as upgrade

    return upgrade(url, folder=folder)
