"""Driver errors become one line; a failing engine's run is recorded failed on a fresh connection."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines import cli, jobs
from pipelines.errors import EngineError
from pipelines.jobs import RunRequest, plan_run, score_run
from pipelines.store import ledger
from pipelines.store.db import connection


def test_a_driver_error_is_one_line_on_stderr(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], database_url: str, tmp_path: Path
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise psycopg.OperationalError("server closed the connection unexpectedly\n\tThis probably means...")

    monkeypatch.setenv("PREDCACHE_DATABASE_URL", database_url)
    monkeypatch.setenv("PREDCACHE_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(ledger, "get_run", broken)
    assert cli.main(["runs", "show", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(
        "predcache: error: database error (server closed the connection"
    )


def test_an_engine_that_broke_the_database_connection_leaves_the_run_failed_with_its_reason(
    monkeypatch: pytest.MonkeyPatch, database_url: str, settings_for, toy_models_dir: Path, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for(database_url, models_dir=toy_models_dir)
    folder = tmp_path / "in"
    folder.mkdir()
    pq.write_table(pa.table({"id": ["a", "b"], "x": [0.1, 0.2], "n": [1, 2]}), folder / "p.parquet")
    run_id = plan_run(settings, RunRequest(model="toy", input=folder)).run_id

    def engine(spec: object) -> None:
        with connection(database_url, autocommit=True) as admin:  # every other session of the run dies
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        raise psycopg.OperationalError("terminating connection due to administrator command")

    monkeypatch.setattr(jobs, "_engine_execute", lambda name: engine)
    with pytest.raises(EngineError, match="terminating connection"):
        score_run(settings, run_id)
    with connection(database_url) as conn:
        run = ledger.get_run(conn, run_id)
    assert run.status == "failed" and "terminating connection" in (run.error or "")


def test_runs_list_shows_a_scoring_run_whose_lease_expired_as_stale(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    database_url: str,
    settings_for,
    toy_models_dir: Path,
    tmp_path: Path,
) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for(database_url, models_dir=toy_models_dir)
    folder = tmp_path / "stale"
    folder.mkdir()
    pq.write_table(pa.table({"id": ["a"], "x": [0.1], "n": [1]}), folder / "p.parquet")
    run_id = plan_run(settings, RunRequest(model="toy", input=folder)).run_id
    with connection(database_url, autocommit=True) as conn:
        ledger.start_attempt(conn, run_id, "beam", owner="elsewhere:1:x", lease_seconds=60)
        conn.execute("UPDATE runs SET lease_expires_at = now() - interval '1 s' WHERE run_id = %s", (run_id,))
    monkeypatch.setenv("PREDCACHE_DATABASE_URL", database_url)
    monkeypatch.setenv("PREDCACHE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PREDCACHE_MODELS_DIR", str(toy_models_dir))
    assert cli.main(["runs", "list"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith(f"{run_id}\t"))
    assert "scoring (stale: owner elsewhere:1:x gone, resumable)" in line


def test_rollback_through_the_cli_sticks_until_the_run_is_published_by_id(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    database_url: str,
    settings_for,
    tmp_path: Path,
    toy_model_builder,
) -> None:  # type: ignore[no-untyped-def]
    from pipelines.jobs import run_job

    models = tmp_path / "models"
    toy_model_builder(models, name="rb")
    settings = settings_for(database_url, models_dir=models, workers=1)
    folder = tmp_path / "rb-in"
    folder.mkdir()
    pq.write_table(pa.table({"id": ["a", "b"], "x": [0.1, 0.2], "n": [1, 2]}), folder / "p.parquet")
    run = run_job(settings, RunRequest(model="rb", input=folder, publish=True))
    monkeypatch.setenv("PREDCACHE_DATABASE_URL", database_url)
    monkeypatch.setenv("PREDCACHE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PREDCACHE_MODELS_DIR", str(models))
    with connection(database_url) as conn:
        publish_id = ledger.get_run(conn, run.run_id).publish_id
    assert cli.main(["rollback", "--model", "rb"]) == 0
    assert capsys.readouterr().out.strip() == (
        f"rolled back publish {publish_id} of rb/1 (runs [{run.run_id}]); active now: nothing"
    )
    again = run_job(settings, RunRequest(model="rb", input=folder, publish=True))
    assert again.run_id == run.run_id and not again.published
    assert cli.main(["publish", "--model", "rb", "--version", "1"]) == 2  # nothing verified to publish
    capsys.readouterr()
    assert cli.main(["publish", "--model", "rb", "--version", "1", "--run", str(run.run_id)]) == 0
    with connection(database_url) as conn:
        assert ledger.get_run(conn, run.run_id).status == "published"
