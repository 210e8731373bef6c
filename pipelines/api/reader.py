"""The API's read side of the cache: an asyncpg pool logged in as the SELECT-only ``predcache_api`` role.

asyncpg was measured against psycopg_pool's AsyncConnectionPool on this machine (2 cores,
32 concurrent tasks, pool of 8, the one-key lookup): ~1.7-2.4k vs ~0.9-1.1k queries/s, and
~0.9-1.3k vs ~0.6k for 50-key lookups; so asyncpg.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from psycopg.conninfo import conninfo_to_dict

from pipelines.errors import ConfigError, StoreError, flat_message
from pipelines.store.lookup import LOOKUP_SQL
from pipelines.store.urls import libpq_url

DEFAULT_POOL_SIZE = 8
ACQUIRE_TIMEOUT_S = 5.0
QUERY_TIMEOUT_S = 5.0
HEALTH_TIMEOUT_S = 2.0


def to_dollar_params(text: str) -> str:
    """A psycopg query (``%s`` placeholders) as an asyncpg one (``$1``, ``$2``, ...).

    Raises:
        ConfigError: the query uses named or escaped placeholders this conversion does not handle.
    """
    if "%(" in text or "%%" in text:
        raise ConfigError("only positional %s placeholders can be converted to $n; fix the query constant")
    parts = text.split("%s")
    return parts[0] + "".join(f"${i}{part}" for i, part in enumerate(parts[1:], start=1))


#: pipelines.store.lookup.LOOKUP_SQL (the CLI's query over predictions_current), for asyncpg.
LOOKUP_QUERY = to_dollar_params(LOOKUP_SQL)
MODEL_EXISTS_QUERY = "SELECT 1 FROM active_versions WHERE model = $1"
ACTIVE_VERSION_QUERY = "SELECT version FROM active_versions WHERE model = $1"
SERVED_MODELS_QUERY = "SELECT model FROM active_versions ORDER BY model"
# served_models (sql/010_least_privilege.sql): freshness from the ledger, without granting the ledger.
MODELS_QUERY = (
    "SELECT model, version, published_at, rows, newest, now() AS now FROM served_models ORDER BY model"
)

# A pooled connection that died while idle (server restart): a fresh one is made on retry.
_STALE = (asyncpg.ConnectionDoesNotExistError, asyncpg.AdminShutdownError)
_UNAVAILABLE = (OSError, asyncio.TimeoutError, asyncpg.InterfaceError, asyncpg.PostgresError)


@dataclass(frozen=True)
class ModelInfo:
    """One served model: its active version and how fresh its predictions are."""

    model: str
    version: str
    published_at: datetime
    rows: int
    newest_computed_at: datetime | None
    age_seconds: float | None


def connect_kwargs(url: str) -> dict[str, Any]:
    """asyncpg connect arguments from a libpq URL or key=value string (as psycopg accepts).

    Raises:
        ConfigError: the URL cannot be parsed.
    """
    try:
        params = conninfo_to_dict(libpq_url(url))
    except Exception as exc:  # psycopg.ProgrammingError; the URL is user input
        raise ConfigError(
            f"cannot parse PREDCACHE_DATABASE_URL ({exc}); use postgresql://user@host:port/db"
        ) from exc
    names = {"host": "host", "port": "port", "user": "user", "password": "password", "dbname": "database"}
    kwargs: dict[str, Any] = {names[k]: v for k, v in params.items() if k in names and v not in (None, "")}
    if "port" in kwargs:
        kwargs["port"] = int(kwargs["port"])
    if params.get("sslmode"):
        kwargs["ssl"] = params["sslmode"]
    return kwargs


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Release hook: our queries leave no session state, so skip asyncpg's RESET ALL round trip."""


async def open_pool(url: str, *, size: int = DEFAULT_POOL_SIZE) -> asyncpg.Pool:
    """A pool of ``size`` sessions logged in with ``url`` (the API's role), in read-only transactions.

    Raises:
        StoreError: the server cannot be reached or refused the login (run `predcache db migrate`).
    """
    try:
        return await asyncpg.create_pool(
            **connect_kwargs(url),
            min_size=size,
            max_size=size,
            command_timeout=QUERY_TIMEOUT_S,
            reset=_keep_session,
            server_settings={
                "default_transaction_read_only": "on",
                "application_name": "predcache-api",
            },
        )
    except _UNAVAILABLE as exc:
        raise StoreError(
            f"the API cannot open its database pool ({_detail(exc)}); check PREDCACHE_API_DATABASE_URL "
            "(or PREDCACHE_DATABASE_URL) and run `predcache db migrate`"
        ) from exc


def _detail(exc: BaseException) -> str:
    return flat_message(exc, limit=200)


class ReadStore:
    """Every query the API runs, with library errors translated to StoreError."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def _fetch(self, query: str, *args: Any, timeout: float = QUERY_TIMEOUT_S) -> list[asyncpg.Record]:
        for attempt in (1, 2):
            try:
                async with self.pool.acquire(timeout=min(timeout, ACQUIRE_TIMEOUT_S)) as conn:
                    return list(await conn.fetch(query, *args, timeout=timeout))
            except _STALE as exc:
                if attempt == 2:
                    raise StoreError(
                        f"the cache database is unavailable ({_detail(exc)}); retry shortly"
                    ) from exc
            except _UNAVAILABLE as exc:
                raise StoreError(
                    f"the cache database is unavailable ({_detail(exc)}); retry shortly"
                ) from exc
        raise AssertionError("unreachable")

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        """Rows of a read-only ``query`` (the monitoring gauges' queries), errors as StoreError."""
        return await self._fetch(query, *args)

    async def lookup(self, model: str, keys: Sequence[str]) -> dict[str, asyncpg.Record]:
        """Visible predictions of ``keys`` by key (one statement: one snapshot, one version)."""
        rows = await self._fetch(LOOKUP_QUERY, model, list(keys))
        return {row["key"]: row for row in rows}

    async def model_served(self, model: str) -> bool:
        return bool(await self._fetch(MODEL_EXISTS_QUERY, model))

    async def active_version(self, model: str) -> str | None:
        """The model's active version, or None when it has none (not served)."""
        rows = await self._fetch(ACTIVE_VERSION_QUERY, model)
        return str(rows[0]["version"]) if rows else None

    async def served_models(self) -> list[str]:
        return [row["model"] for row in await self._fetch(SERVED_MODELS_QUERY)]

    async def models(self) -> list[ModelInfo]:
        out = []
        for row in await self._fetch(MODELS_QUERY):
            newest = row["newest"]
            age = (row["now"] - newest).total_seconds() if newest is not None else None
            out.append(
                ModelInfo(row["model"], row["version"], row["published_at"], int(row["rows"]), newest, age)
            )
        return out

    async def ping(self) -> None:
        """Raises StoreError unless the database answers within HEALTH_TIMEOUT_S."""
        await self._fetch("SELECT 1", timeout=HEALTH_TIMEOUT_S)

    def pool_sizes(self) -> tuple[int, int]:
        """(open connections, connections in use)."""
        size = self.pool.get_size()
        return size, size - self.pool.get_idle_size()
