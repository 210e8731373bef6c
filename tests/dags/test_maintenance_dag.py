"""The daily retention DAG (predcache_maintenance): parsed by Airflow, and its task runs `gc`."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipelines.store.db import connection

DAGS_FOLDER = Path(__file__).resolve().parents[2] / "dags"
DAG_ID = "predcache_maintenance"

pytestmark = pytest.mark.airflow


@pytest.fixture(scope="module")
def dagbag(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with pytest.MonkeyPatch.context() as patch:
        for name in [k for k in os.environ if k.startswith("AIRFLOW")]:
            patch.delenv(name)
        patch.setenv("AIRFLOW_HOME", str(tmp_path_factory.mktemp("airflow_maintenance")))
        patch.setenv("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
        from airflow.dag_processing.dagbag import DagBag

        yield DagBag(dag_folder=str(DAGS_FOLDER))


def test_maintenance_dag_runs_gc_daily_and_alerts_on_failure(dagbag: Any) -> None:
    assert dagbag.import_errors == {}
    dag = dagbag.dags[DAG_ID]
    assert dag.timetable.expression == "0 0 * * *" and dag.catchup is False
    assert sorted(dag.task_ids) == ["alerts", "gc"]
    assert dag.get_task("gc").on_failure_callback and dag.get_task("gc").retries >= 1


def test_maintenance_gc_task_deletes_a_failed_run_outside_the_window(
    dagbag: Any, migrated_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with connection(migrated_url) as conn:
        version_id = conn.execute(
            "INSERT INTO model_versions (model, version, card) VALUES ('toy', '1', '{}') RETURNING version_id"
        ).fetchone()[0]  # type: ignore[index]
        conn.execute(
            "INSERT INTO runs (version_id, model, version, engine, signature, input_uri, input_fingerprint, "
            "shard_rows, rows_planned, status, created_at) VALUES "
            "(%s, 'toy', '1', 'beam', 'default', '/in', 'f', 10, 0, 'failed', now() - interval '30 days')",
            (version_id,),
        )
    monkeypatch.setenv("PREDCACHE_DATABASE_URL", migrated_url)
    monkeypatch.setenv("PREDCACHE_HOME", str(tmp_path))
    result = dagbag.dags[DAG_ID].get_task("gc").python_callable()
    assert result == {"runs_deleted": 1, "predictions_deleted": 0, "versions_dropped": []}
