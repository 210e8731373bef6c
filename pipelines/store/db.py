"""Connections and schema: the configured server, or an embedded one started on demand."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg

from pipelines.errors import ConfigError, StoreError
from pipelines.resources import sql_dir

SQL_DIR = sql_dir()
_MIGRATION_LOCK = 0x70726564  # arbitrary advisory-lock id ("pred")
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
    """The configured URL, or the embedded server's when none is configured."""
    return database_url if database_url else embedded_url(embedded_pgdata)


def connect(url: str, *, autocommit: bool = False) -> psycopg.Connection[Any]:
    """Open a connection; a failure becomes one line that says what to check.

    Raises:
        StoreError: the server cannot be reached or refused the login.
    """
    try:
        return psycopg.connect(url, autocommit=autocommit, connect_timeout=10, application_name="predcache")
    except psycopg.OperationalError as exc:
        detail = " ".join(str(exc).split())
        raise StoreError(f"cannot connect to PostgreSQL ({detail}); check PREDCACHE_DATABASE_URL") from exc


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


def migration_files(sql_dir: Path = SQL_DIR) -> list[Path]:
    files = sorted(sql_dir.glob("*.sql"))
    if not files:
        raise ConfigError(f"no SQL files in {sql_dir}; the install is incomplete (reinstall predcache)")
    return files


def migrate(url: str, *, sql_dir: Path = SQL_DIR) -> list[str]:
    """Apply every ``sql/*.sql`` file in order (idempotent); return the names applied now.

    Files already applied with the same content are skipped; the whole migration holds an
    advisory lock so concurrent commands do not race.
    """
    applied_now: list[str] = []
    with connection(url) as conn:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (name text PRIMARY KEY, sha256 text NOT NULL, "
            "applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = dict(conn.execute("SELECT name, sha256 FROM schema_migrations").fetchall())
        for path in migration_files(sql_dir):
            text = path.read_text()
            digest = hashlib.sha256(text.encode()).hexdigest()
            if done.get(path.name) == digest:
                continue
            conn.execute(text)  # type: ignore[arg-type]  # trusted DDL shipped with the package
            conn.execute(
                "INSERT INTO schema_migrations (name, sha256) VALUES (%s, %s) "
                "ON CONFLICT (name) DO UPDATE SET sha256 = EXCLUDED.sha256, applied_at = now()",
                (path.name, digest),
            )
            applied_now.append(path.name)
    return applied_now
