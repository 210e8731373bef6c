"""A shard worker whose connection broke (database restart, killed backend) reconnects and writes."""

from __future__ import annotations

from pipelines.engines.worker import ShardWorker
from pipelines.store import ledger
from pipelines.store.db import connection
from tests.engines.conftest import ToyShard


def test_a_worker_whose_connection_was_killed_reconnects_and_stores_the_shard(toy_shard: ToyShard) -> None:
    url = toy_shard.spec.database_url
    worker = ShardWorker(toy_shard.spec)
    worker.open()
    try:
        with connection(url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (worker._conn.info.backend_pid,))
        done = worker.process(toy_shard.shard.shard_id, [toy_shard.rows])
    finally:
        worker.close()
    assert done["stored"] and done["rows_out"] == 30
    with connection(url) as conn:
        assert ledger.planned_shards(conn, toy_shard.run_id, pending_only=True) == []
