"""The per-process shard worker both engines run: split input by shard, then validate, score and
write each shard exactly once. Keeping it here is what makes Beam and Spark produce identical caches.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pyarrow as pa

from pipelines.core.inputs import unplannable
from pipelines.core.keys import key_hash
from pipelines.core.model import Model, load_model
from pipelines.core.score import score_table
from pipelines.core.shards import assign_shards, runs
from pipelines.engines.spec import JobSpec
from pipelines.errors import EngineError, StoreError
from pipelines.faults import fault_point
from pipelines.store.db import connect
from pipelines.store.writer import write_shard

#: Tries of one shard write when the database is briefly away (restart, lock timeout), and the
#: waits between them: about a minute in all, enough for a PostgreSQL restart.
WRITE_TRIES = 8
WRITE_BACKOFF_SECONDS = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0)


def split_by_shard(table: pa.Table, spec: JobSpec) -> list[tuple[str, pa.Table]]:
    """Cut ``table`` into one piece per planned shard; rows of shards not in the spec are dropped.

    The rows are put in shard order with one ``take``; the pieces are zero-copy slices of
    that copy (an Arrow IPC writer stores a slice compactly). The input's fingerprint is
    checked before a run resumes, so every row of the input falls in a shard of the full plan,
    except rows with a null or empty key: planning rejected those, so they are dropped here.
    """
    if table.num_rows == 0:
        return []
    # One chunk per column first: a take on a chunked table concatenates its chunks every time.
    table = table.combine_chunks()
    positions = assign_shards(key_hash(table.column(spec.key)), spec.shards)
    positions[unplannable(table.column(spec.key)).to_numpy(zero_copy_only=False)] = -1
    order = np.argsort(positions, kind="stable")
    ordered = table.take(pa.array(order))
    return [
        (spec.shards[position].shard_id, ordered.slice(start, stop - start))
        for position, start, stop in runs(positions[order])
        if position >= 0
    ]


class ShardWorker:
    """Per-process scorer + writer. Create it once per worker process (or DoFn instance)."""

    def __init__(self, spec: JobSpec) -> None:
        self.spec = spec
        self._planned = {shard.shard_id: shard.rows for shard in spec.shards}
        self._model: Model | None = None
        self._conn: Any = None

    def open(self) -> None:
        spec = self.spec
        self._model = load_model(
            spec.models_dir, spec.model, spec.version, signature=spec.signature, threads=spec.ort_threads
        )
        self._conn = connect(spec.database_url, autocommit=True)

    def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                conn.close()
            except Exception:  # a broken connection may fail to close; it is gone either way
                pass

    def _connection(self) -> Any:
        """The worker's connection, opened again if the last one broke (a database restart)."""
        if self._conn is None or self._conn.closed or self._conn.broken:
            self.close()
            self._conn = connect(self.spec.database_url, autocommit=True)
        return self._conn

    def _write(self, result: Any, started: float) -> bool:
        """``write_shard`` with retries of transient failures on a fresh connection.

        Safe to retry: the shard's done marker commits with its rows, so a write that did
        commit before the connection broke is found done and not written again.

        Raises:
            StoreError: a data error (at once) or a transient one that outlasted the retries.
        """
        for attempt in range(WRITE_TRIES):
            try:
                return write_shard(
                    self._connection(),
                    run_id=self.spec.run_id,
                    version_id=self.spec.version_id,
                    result=result,
                    attempt=self.spec.attempt,
                    started=started,
                )
            except StoreError as exc:
                if not exc.retryable or attempt == WRITE_TRIES - 1:
                    raise
                self.close()
                time.sleep(WRITE_BACKOFF_SECONDS[min(attempt, len(WRITE_BACKOFF_SECONDS) - 1)])
        raise AssertionError("unreachable")

    def process(self, shard_id: str, tables: list[pa.Table]) -> dict[str, Any]:
        """Score and store one shard (all its rows); returns the shard's counts."""
        if self._model is None:
            self.open()
        assert self._model is not None
        if shard_id in self.spec.fail_shards:
            raise EngineError(f"injected fault in shard {shard_id}")
        started = time.perf_counter()
        table = pa.concat_tables(tables, promote_options="permissive") if len(tables) != 1 else tables[0]
        planned = self._planned.get(shard_id)
        if planned is not None and table.num_rows != planned:
            # Never commit a shard with other rows than planned: the shard stays pending and a
            # retry (or a rerun, which resumes) reads it again, instead of a run that cannot verify.
            raise EngineError(
                f"shard {shard_id} received {table.num_rows} rows, the plan has {planned}; "
                "it was not stored: rerun the same command to resume"
            )
        result = score_table(shard_id, table, self._model, batch_rows=self.spec.batch_rows)
        fault_point("shard.before_write")
        stored = self._write(result, started)
        return {
            "shard_id": shard_id,
            "stored": stored,
            "rows_in": result.rows_in,
            "rows_out": result.rows_out,
        }
