"""The API reads as predcache_reader (sql/003_readonly_role.sql), which can read and nothing else."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from pipelines.api.reader import LOOKUP_QUERY, READER_ROLE, open_pool, to_dollar_params
from pipelines.store.lookup import LOOKUP_SQL


def _as_reader(url: str) -> psycopg.Connection:
    # The role only, without the API's read-only transactions: the refusals below are the grants'.
    return psycopg.connect(url, autocommit=True, options=f"-c role={READER_ROLE}")


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO active_versions (model, version, version_id, publish_id) VALUES ('x', '1', 1, 1)",
        "UPDATE predictions SET score = 0",
        "DELETE FROM runs",
        "CREATE TABLE public.reader_was_here (a int)",
        "TRUNCATE predictions",
    ],
)
def test_reader_role_is_refused_every_write(api_cache, statement: str) -> None:
    with _as_reader(api_cache.url) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(statement)


def test_reader_role_reads_the_lookup_view_through_run_partitions(api_cache) -> None:
    with _as_reader(api_cache.url) as conn:
        rows = conn.execute(LOOKUP_SQL, ("toy", api_cache.keys[:5])).fetchall()
        history = conn.execute("SELECT count(*) FROM predictions_published WHERE model = 'toy'").fetchone()
    assert len(rows) == 5 and history == (len(api_cache.keys),)


def test_api_pool_sessions_run_as_the_reader_in_read_only_transactions(api_cache) -> None:
    async def probe() -> tuple[str, str]:
        pool = await open_pool(api_cache.url, size=1)
        try:
            row = await pool.fetchrow("SELECT current_user, current_setting('transaction_read_only')")
        finally:
            await pool.close()
        assert row is not None
        return str(row[0]), str(row[1])

    assert asyncio.run(probe()) == (READER_ROLE, "on")


def test_api_lookup_query_is_the_cli_query_with_dollar_placeholders() -> None:
    assert LOOKUP_QUERY == LOOKUP_SQL.replace("%s", "$1", 1).replace("%s", "$2", 1)
    assert to_dollar_params("a = %s AND b = %s OR c = %s") == "a = $1 AND b = $2 OR c = $3"
