"""A shard is stored only with exactly the rows its plan counted.

Engines hand a worker a shard's rows; if some went missing on the way (a lost shuffle element, a
piece deleted too early), storing the rest would mark the shard done and leave a run that can
never verify. The worker refuses instead, so the shard stays pending and a rerun resumes it.
"""

from __future__ import annotations

import pytest

from pipelines.engines.worker import ShardWorker
from pipelines.errors import EngineError
from pipelines.store import ledger
from pipelines.store.db import connection
from tests.engines.conftest import ToyShard


def test_a_shard_with_fewer_rows_than_planned_is_refused_and_stays_pending(toy_shard: ToyShard) -> None:
    shard_id, rows = toy_shard.shard.shard_id, toy_shard.rows
    worker = ShardWorker(toy_shard.spec)
    try:
        with pytest.raises(EngineError) as refused:
            worker.process(shard_id, [rows.slice(0, 29)])
        assert str(refused.value) == (
            f"shard {shard_id} received 29 rows, the plan has 30; "
            "it was not stored: rerun the same command to resume"
        )
        with connection(toy_shard.spec.database_url) as conn:
            pending = ledger.planned_shards(conn, toy_shard.run_id, pending_only=True)
        assert [s.shard_id for s in pending] == [shard_id]
        done = worker.process(shard_id, [rows.slice(0, 10), rows.slice(10)])
        assert done["stored"] and done["rows_in"] == 30
    finally:
        worker.close()
