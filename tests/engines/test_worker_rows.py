"""A shard is stored only with exactly the rows its plan counted.

Engines hand a worker a shard's rows; if some went missing on the way (a lost shuffle element, a
piece deleted too early), storing the rest would mark the shard done and leave a run that can
never verify. The worker refuses instead, so the shard stays pending and a rerun resumes it.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from pipelines.core.keys import key_hash
from pipelines.core.model import load_model
from pipelines.core.shards import plan_shards
from pipelines.engines.spec import JobSpec
from pipelines.engines.worker import ShardWorker
from pipelines.errors import EngineError
from pipelines.store import ledger
from pipelines.store.db import connection


def test_a_shard_with_fewer_rows_than_planned_is_refused_and_stays_pending(
    migrated_url: str, toy_models_dir: Path
) -> None:
    model = load_model(toy_models_dir, "toy")
    table = pa.table({"id": [f"r{i}" for i in range(30)], "x": [0.1] * 30, "n": [1] * 30})
    shards = plan_shards(key_hash(table["id"]), 100)
    with connection(migrated_url, autocommit=True) as conn, conn.transaction():
        version_id = ledger.register_version(conn, model)
        run_id = ledger.create_run(
            conn, version_id=version_id, model=model, engine="test", input_uri="/in/rows",
            fingerprint="f", shard_rows=100, shards=shards,
        )  # fmt: skip
    spec = JobSpec(
        database_url=migrated_url, models_dir=toy_models_dir, model="toy", version="1", signature="default",
        run_id=run_id, version_id=version_id, attempt=1, key="id", columns=["id", "x", "n"], files=[],
        shards=shards, batch_rows=64, ort_threads=1, workers=1,
    )  # fmt: skip
    worker = ShardWorker(spec)
    try:
        with pytest.raises(EngineError) as refused:
            worker.process(shards[0].shard_id, [table.slice(0, 29)])
        assert str(refused.value) == (
            f"shard {shards[0].shard_id} received 29 rows, the plan has 30; "
            "it was not stored: rerun the same command to resume"
        )
        with connection(migrated_url) as conn:
            assert [s.shard_id for s in ledger.planned_shards(conn, run_id, pending_only=True)] == [
                shards[0].shard_id
            ]
        done = worker.process(shards[0].shard_id, [table.slice(0, 10), table.slice(10)])
        assert done["stored"] and done["rows_in"] == 30
    finally:
        worker.close()
