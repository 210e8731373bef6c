"""The API never changes the schema: it checks the cache is at the newest migration, or says what to run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict

from pipelines.api.app import prepare_database
from pipelines.errors import MigrationError
from pipelines.settings import Settings
from pipelines.store.db import connection, migrate


def _tables(url: str) -> list[str]:
    with connection(url) as conn:
        return [row[0] for row in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]


def test_the_api_refuses_an_unmigrated_cache_without_creating_anything(
    new_database: Callable[[], str], make_api_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    url = new_database()
    with pytest.raises(MigrationError, match=r"run `predcache db migrate`"):
        prepare_database(make_api_settings(url, tmp_path / "home"))
    assert _tables(url) == []


def test_the_api_accepts_a_cache_at_the_newest_migration(
    new_database: Callable[[], str], make_api_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    url = new_database()
    migrate(url)
    api_url = conninfo_to_dict(prepare_database(make_api_settings(url, tmp_path / "home")))
    # The same database, logged in as the API's own SELECT-only role (sql/010).
    assert (api_url["dbname"], api_url["user"]) == (conninfo_to_dict(url)["dbname"], "predcache_api")
