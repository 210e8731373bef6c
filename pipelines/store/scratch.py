"""Throw-away databases on a server: one per test module or benchmark scenario, dropped afterwards."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pipelines.store.db import connection


def create_database(server_url: str, label: str) -> str:
    """Create an empty database named ``pc_<label>_<random>`` on the server; return its URL."""
    name = f"pc_{label}_{uuid.uuid4().hex[:12]}"
    with connection(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return make_conninfo(server_url, dbname=name)


def drop_database(server_url: str, url: str) -> None:
    """Drop the database of ``url`` (closing its sessions) from the server at ``server_url``."""
    name = conninfo_to_dict(url)["dbname"]
    with connection(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(str(name))))


@contextlib.contextmanager
def scratch_database(server_url: str, label: str) -> Iterator[str]:
    """A new, empty database on the server for the block; dropped when the block ends."""
    url = create_database(server_url, label)
    try:
        yield url
    finally:
        drop_database(server_url, url)
