"""SQL lookup from Python tools: an SQLAlchemy engine for the cache (pandas, notebooks, BI scripts).

psycopg2 is the driver here because it is what SQLAlchemy, pandas and BI tools default to for
``postgresql://``; predcache's own code talks psycopg 3 (and asyncpg in the API).
"""

from __future__ import annotations

from typing import Any, Literal

import psycopg2
from sqlalchemy import Engine, create_engine

from pipelines.errors import ConfigError
from pipelines.settings import Settings
from pipelines.store.db import CONNECT_TIMEOUT_S, READER_ROLE, resolve_url, unreachable

Role = Literal["reader", "owner"]


def sql_engine(settings: Settings | None = None, *, role: Role = "reader") -> Engine:
    """An SQLAlchemy engine for the cache: the configured server, or the embedded one.

    Nothing is migrated or created: run ``predcache db migrate`` (or any scoring command) first.

    Args:
        settings: where the cache is (``PREDCACHE_DATABASE_URL`` or the embedded server under
            ``PREDCACHE_HOME``); read from the environment when omitted.
        role: ``"reader"`` (default): sessions run as the read-only role ``predcache_reader``
            in read-only transactions. ``"owner"``: the configured login as it is.

    Returns:
        An engine whose connections use psycopg2 (``pandas.read_sql(query, engine)`` works).

    Raises:
        ConfigError: ``role`` is neither "reader" nor "owner".
        StoreError: a connection cannot be opened (raised when the engine first connects).
    """
    url, options = _login(settings if settings is not None else Settings(), role)

    def connect() -> Any:
        try:
            return psycopg2.connect(
                url, connect_timeout=CONNECT_TIMEOUT_S, application_name="predcache-sql", **options
            )
        except psycopg2.OperationalError as exc:
            raise unreachable(exc) from exc

    return create_engine("postgresql+psycopg2://", creator=connect, pool_pre_ping=True)


def _login(settings: Settings, role: Role) -> tuple[str, dict[str, str]]:
    """The URL and connect options of a ``role`` session: the configured login, taking the reader
    role for the session when ``role`` is "reader".

    One place to change when the reader gets a login (and URL) of its own.
    """
    if role not in ("reader", "owner"):
        raise ConfigError(f"unknown role {role!r}; use 'reader' (read-only, the default) or 'owner'")
    url = resolve_url(settings.database_url, settings.embedded_pgdata)
    if role == "owner":
        return url, {}
    return url, {"options": f"-c role={READER_ROLE} -c default_transaction_read_only=on"}
