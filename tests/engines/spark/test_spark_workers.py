"""Spark's Python workers are reused: one shard worker (ONNX session + connection) each, for many shards."""

from __future__ import annotations

import pytest

from pipelines.jobs import RunRequest, run_job
from pipelines.store.db import connection

pytestmark = [
    pytest.mark.spark,
    pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning"),
]
#: Connections the engine's workers hold to this module's database (each ShardWorker keeps one open).
WORKER_CONNECTIONS_SQL = (
    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
    "AND application_name = 'predcache' AND pid <> pg_backend_pid()"
)


def test_each_python_worker_scores_many_shards_with_one_shard_worker(
    spark, local_master, database_url, settings_for, flights_dir
) -> None:
    day = flights_dir / "date=2013-07-06"
    request = RunRequest(model="flights_delay", input=day, engine="spark", shard_rows=100)
    summary = run_job(settings_for(database_url, spark_master=local_master), request)
    with connection(database_url) as conn:
        [(worker_connections,)] = conn.execute(WORKER_CONNECTIONS_SQL).fetchall()
    assert summary.status == "verified" and summary.shards_total >= 6
    assert 1 <= worker_connections <= 2  # local[2,4]: two task slots, so at most two Python workers
