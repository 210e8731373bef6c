"""A shard worker whose connection broke (database restart, killed backend) reconnects and writes."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from pipelines.core.keys import key_hash
from pipelines.core.model import load_model
from pipelines.core.shards import plan_shards
from pipelines.engines.spec import JobSpec
from pipelines.engines.worker import ShardWorker
from pipelines.store import ledger
from pipelines.store.db import connection


def test_a_worker_whose_connection_was_killed_reconnects_and_stores_the_shard(
    migrated_url: str, toy_models_dir: Path
) -> None:
    model = load_model(toy_models_dir, "toy")
    table = pa.table({"id": [f"w{i}" for i in range(30)], "x": [0.1] * 30, "n": [1] * 30})
    shards = plan_shards(key_hash(table["id"]), 100)
    with connection(migrated_url, autocommit=True) as conn, conn.transaction():
        version_id = ledger.register_version(conn, model)
        run_id = ledger.create_run(
            conn, version_id=version_id, model=model, engine="test", input_uri="/in/reconnect",
            fingerprint="f", shard_rows=100, shards=shards,
        )  # fmt: skip
    spec = JobSpec(
        database_url=migrated_url, models_dir=toy_models_dir, model="toy", version="1", signature="default",
        run_id=run_id, version_id=version_id, attempt=1, key="id", columns=["id", "x", "n"], files=[],
        shards=shards, batch_rows=64, ort_threads=1, workers=1,
    )  # fmt: skip
    worker = ShardWorker(spec)
    worker.open()
    try:
        with connection(migrated_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (worker._conn.info.backend_pid,))
        done = worker.process(shards[0].shard_id, [table])
    finally:
        worker.close()
    assert done["stored"] and done["rows_out"] == 30
    with connection(migrated_url) as conn:
        assert ledger.planned_shards(conn, run_id, pending_only=True) == []
