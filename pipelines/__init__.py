"""predcache: batch-first keyed prediction with an exactly-once PostgreSQL cache.

Public API: :func:`sql_engine` (an SQLAlchemy engine for reading the cache from Python tools).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["__version__", "sql_engine"]

if TYPE_CHECKING:
    from pipelines.store.sqlalchemy_engine import sql_engine


def __getattr__(name: str) -> Any:
    # Imported on first use: engine workers import pipelines.* and need neither SQLAlchemy nor psycopg2.
    if name == "sql_engine":
        from pipelines.store.sqlalchemy_engine import sql_engine

        return sql_engine
    raise AttributeError(f"module 'pipelines' has no attribute {name!r}")
