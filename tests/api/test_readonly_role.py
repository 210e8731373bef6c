"""The API logs in as predcache_api (sql/010_least_privilege.sql): it reads lookups and nothing else."""

from __future__ import annotations

import asyncio
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from pipelines.api.app import prepare_database
from pipelines.api.reader import LOOKUP_QUERY, MODELS_QUERY, open_pool, to_dollar_params
from pipelines.store.db import connection
from pipelines.store.lookup import LOOKUP_SQL
from pipelines.store.roles import API_ROLE, scram_verifier


@pytest.fixture(scope="module")
def api_login_url(api_cache, tmp_path_factory: pytest.TempPathFactory, make_api_settings) -> str:  # type: ignore[no-untyped-def]
    """The URL `predcache serve` derives with zero set-up (no PREDCACHE_API_DATABASE_URL)."""
    return prepare_database(make_api_settings(api_cache.url, tmp_path_factory.mktemp("api_role_home")))


def _as_api(url: str) -> psycopg.Connection:
    conn = psycopg.connect(url, autocommit=True)
    # The role's read-only default is a default any session may lift: the refusals below are the grants'.
    conn.execute("SET default_transaction_read_only = off")
    return conn


def test_derived_api_url_logs_in_as_the_api_role_and_looks_up(api_cache, api_login_url: str) -> None:  # type: ignore[no-untyped-def]
    assert conninfo_to_dict(api_login_url)["user"] == API_ROLE
    with psycopg.connect(api_login_url) as conn:
        who = conn.execute("SELECT current_user, session_user").fetchone()
        rows = conn.execute(LOOKUP_SQL, ("toy", api_cache.keys[:5])).fetchall()
        models = conn.execute(MODELS_QUERY.replace("$1", "%s")).fetchall()
    assert who == (API_ROLE, API_ROLE) and len(rows) == 5 and [m[0] for m in models] == ["toy"]


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
def test_api_role_is_refused_every_write(api_login_url: str, statement: str) -> None:
    with _as_api(api_login_url) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(statement)


@pytest.mark.parametrize(
    "query",
    [
        "SELECT row FROM rejects",
        "SELECT error FROM runs",
        "SELECT input_uri FROM runs",
        "SELECT * FROM run_shards",
        "SELECT card FROM model_versions",
        "SELECT * FROM predictions",  # raw rows include unpublished runs
        "SELECT * FROM predictions_v1",
    ],
)
def test_api_role_cannot_read_rejected_rows_run_errors_or_the_ledger(api_login_url: str, query: str) -> None:
    with _as_api(api_login_url) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(query)


def test_api_role_cannot_set_role_to_the_owner(api_cache, api_login_url: str) -> None:  # type: ignore[no-untyped-def]
    with connection(api_cache.url) as owner:
        owner_name = owner.execute("SELECT current_user").fetchone()[0]  # type: ignore[index]
    with _as_api(api_login_url) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(psycopg.sql.SQL("SET ROLE {}").format(psycopg.sql.Identifier(owner_name)))


def test_tables_created_later_are_not_granted_to_readers(api_cache, api_login_url: str) -> None:  # type: ignore[no-untyped-def]
    with connection(api_cache.url) as owner:
        owner.execute("CREATE TABLE IF NOT EXISTS later_secrets (a int)")
    try:
        with _as_api(api_login_url) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT * FROM later_secrets")
    finally:
        with connection(api_cache.url) as owner:
            owner.execute("DROP TABLE later_secrets")


def test_reader_roles_have_a_server_side_statement_timeout(api_cache, api_login_url: str) -> None:  # type: ignore[no-untyped-def]
    with psycopg.connect(api_login_url) as conn:
        settings = conn.execute(
            "SELECT current_setting('statement_timeout'), current_setting('default_transaction_read_only')"
        ).fetchone()
    with connection(api_cache.url) as owner:
        reader = owner.execute(
            "SELECT s.setconfig FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole "
            "WHERE r.rolname = 'predcache_reader' AND s.setdatabase = 0"
        ).fetchone()
    assert settings == ("5s", "on") and reader == (["statement_timeout=1min"],)


def test_api_pool_sessions_run_as_the_api_role_in_read_only_transactions(api_login_url: str) -> None:
    async def probe() -> tuple[str, str]:
        pool = await open_pool(api_login_url, size=1)
        try:
            row = await pool.fetchrow("SELECT current_user, current_setting('transaction_read_only')")
        finally:
            await pool.close()
        assert row is not None
        return str(row[0]), str(row[1])

    assert asyncio.run(probe()) == (API_ROLE, "on")


def test_generated_api_password_is_kept_private_and_reused(
    api_cache, make_api_settings, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    settings = make_api_settings(api_cache.url, tmp_path / "home")
    first = conninfo_to_dict(prepare_database(settings))["password"]
    stored = tmp_path / "home" / "api_db_password"
    assert stored.stat().st_mode & 0o777 == 0o600
    assert conninfo_to_dict(prepare_database(settings))["password"] == first == stored.read_text().strip()


def test_configured_api_password_wins_over_a_generated_one(
    api_cache, make_api_settings, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    settings = make_api_settings(api_cache.url, tmp_path / "home", api_db_password="configured-secret")
    assert conninfo_to_dict(prepare_database(settings))["password"] == "configured-secret"
    assert not (tmp_path / "home" / "api_db_password").exists()


def test_scram_verifier_matches_the_one_postgresql_computes(api_cache) -> None:  # type: ignore[no-untyped-def]
    import base64

    with connection(api_cache.url) as conn:
        conn.execute("SET LOCAL password_encryption = 'scram-sha-256'")
        conn.execute("CREATE ROLE predcache_scram_probe NOLOGIN PASSWORD 'tr0ub4dor&3'")
        try:
            stored = conn.execute(
                "SELECT rolpassword FROM pg_authid WHERE rolname = 'predcache_scram_probe'"
            ).fetchone()[0]  # type: ignore[index]
        finally:
            conn.execute("DROP ROLE predcache_scram_probe")
    iterations, salt = stored.split("$")[1].split(":")
    assert scram_verifier("tr0ub4dor&3", salt=base64.b64decode(salt), iterations=int(iterations)) == stored


def test_api_lookup_query_is_the_cli_query_with_dollar_placeholders() -> None:
    assert LOOKUP_QUERY == LOOKUP_SQL.replace("%s", "$1", 1).replace("%s", "$2", 1)
    assert to_dollar_params("a = %s AND b = %s OR c = %s") == "a = $1 AND b = $2 OR c = $3"


def test_db_migrate_says_where_the_api_password_is_and_never_prints_it(
    api_cache, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    from pipelines.cli import main

    monkeypatch.setenv("PREDCACHE_DATABASE_URL", api_cache.url)
    monkeypatch.setenv("PREDCACHE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("PREDCACHE_API_DB_PASSWORD", raising=False)
    monkeypatch.delenv("PREDCACHE_API_DATABASE_URL", raising=False)
    assert main(["db", "migrate"]) == 0
    out = capsys.readouterr().out
    password = (tmp_path / "home" / "api_db_password").read_text().strip()
    assert f"password from {tmp_path / 'home' / 'api_db_password'}" in out and password not in out
