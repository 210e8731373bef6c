"""pipelines.sql_engine: the documented pandas example runs, as the read-only reader."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy
from psycopg.conninfo import conninfo_to_dict

from pipelines import sql_engine
from pipelines.api.reader import connect_kwargs
from pipelines.errors import ConfigError
from pipelines.jobs import RunRequest, run_job
from pipelines.settings import Settings
from pipelines.store.db import connection, migrate

DOC = Path(__file__).resolve().parents[2] / "docs" / "sql_lookup.md"
#: The doc's example asks for the reference model's keys: a toy model under that name serves them.
MODEL = "flights_delay"
KEYS = ["2013-07-01_UA1001_EWR", "2013-07-04_AA1_JFK", "2013-07-07_UA1028_EWR"]


def _doc_example() -> str:
    """The ```python block of docs/sql_lookup.md's pandas section."""
    section = DOC.read_text().split("## From Python: pandas and SQLAlchemy", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None, "docs/sql_lookup.md lost its pandas example"
    return match.group(1)


@pytest.fixture(scope="module")
def published(
    migrated_url: str, tmp_path_factory: pytest.TempPathFactory, toy_model_builder: Callable[..., Path]
) -> Settings:
    """A real published run of a toy model named flights_delay over the doc's keys (but the last)."""
    root = tmp_path_factory.mktemp("sql_engine")
    toy_model_builder(root / "models", name=MODEL)
    (root / "input").mkdir()
    table = pa.table({"id": KEYS[:2], "x": [0.5, 2.0], "n": [1, 2]})
    pq.write_table(table, root / "input" / "part-0.parquet")
    settings = Settings(database_url=migrated_url, home=root / "home", models_dir=root / "models", workers=1)
    run_job(settings, RunRequest(model=MODEL, input=root / "input", publish=True))
    return settings


def _psycopg2_url(url: str) -> str:
    """``url`` (a libpq key=value string) as a ``postgresql+psycopg2://`` URL, as BI tools write it."""
    info = conninfo_to_dict(url)
    host = str(info.get("host") or "")
    where = f"@{host}:{info.get('port') or 5432}" if host and not host.startswith("/") else "@"
    query = f"?host={host}&port={info.get('port') or 5432}" if host.startswith("/") else ""
    return f"postgresql+psycopg2://{info.get('user') or 'postgres'}{where}/{info['dbname']}{query}"


def test_the_documented_pandas_example_reads_the_published_predictions(
    published: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert published.database_url is not None
    monkeypatch.setenv("PREDCACHE_DATABASE_URL", published.database_url)
    namespace: dict[str, object] = {}
    exec(compile(_doc_example(), str(DOC), "exec"), namespace)
    frame = namespace["frame"]
    with connection(published.database_url) as conn:
        stored = conn.execute(
            "SELECT key, score FROM predictions_current WHERE model = %s ORDER BY key", (MODEL,)
        ).fetchall()
    assert [(row.key, pytest.approx(row.score)) for row in frame.itertuples()] == stored  # type: ignore[attr-defined]
    assert "2013-07-01_UA1001_EWR" in capsys.readouterr().out


def test_the_default_engine_reads_as_the_read_only_role_and_cannot_write(published: Settings) -> None:
    engine = sql_engine(published)
    try:
        with engine.connect() as conn:
            assert conn.execute(sqlalchemy.text("SELECT current_user")).scalar() == "predcache_reader"
            with pytest.raises(sqlalchemy.exc.DBAPIError, match="read-only transaction"):
                conn.execute(sqlalchemy.text("DELETE FROM runs"))
    finally:
        engine.dispose()


def test_a_psycopg2_url_works_for_migrate_the_api_and_the_engine(published: Settings) -> None:
    assert published.database_url is not None
    url = _psycopg2_url(published.database_url)
    assert migrate(url) == []
    assert connect_kwargs(url)["database"] == conninfo_to_dict(published.database_url)["dbname"]
    engine = sql_engine(published.model_copy(update={"database_url": url}), role="owner")
    try:
        with engine.connect() as conn:
            assert conn.execute(sqlalchemy.text("SELECT count(*) FROM predictions_current")).scalar() == 2
    finally:
        engine.dispose()


def test_an_unknown_role_is_a_config_error(published: Settings) -> None:
    with pytest.raises(ConfigError, match="unknown role 'admin'"):
        sql_engine(published, role="admin")  # type: ignore[arg-type]  # what a caller without mypy may pass
