"""The per-process shard worker both engines run: split input by shard, then validate, score and
write each shard exactly once. Keeping it here is what makes Beam and Spark produce identical caches.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pyarrow as pa

from pipelines.core.keys import key_hash
from pipelines.core.model import Model, load_model
from pipelines.core.score import score_table
from pipelines.core.shards import assign_shards
from pipelines.engines.spec import JobSpec
from pipelines.errors import EngineError
from pipelines.store.db import connect
from pipelines.store.writer import write_shard


def split_by_shard(table: pa.Table, spec: JobSpec) -> list[tuple[str, pa.Table]]:
    """Cut ``table`` into one piece per planned shard; rows of shards not in the spec are dropped.

    The rows are put in shard order with one ``take``; the pieces are zero-copy slices of
    that copy (an Arrow IPC writer stores a slice compactly). The input's fingerprint is
    checked before a run resumes, so every row of the input falls in a shard of the full plan.
    """
    if table.num_rows == 0:
        return []
    # One chunk per column first: a take on a chunked table concatenates its chunks every time.
    table = table.combine_chunks()
    positions = assign_shards(key_hash(table.column(spec.key)), spec.shards)
    order = np.argsort(positions, kind="stable")
    sorted_pos = positions[order]
    bounds = np.flatnonzero(np.diff(sorted_pos)) + 1
    starts = np.concatenate([[0], bounds])
    stops = np.concatenate([bounds, [len(sorted_pos)]])
    ordered = table.take(pa.array(order))
    return [
        (spec.shards[int(sorted_pos[a])].shard_id, ordered.slice(int(a), int(b - a)))
        for a, b in zip(starts, stops, strict=True)
        if sorted_pos[a] >= 0
    ]


class ShardWorker:
    """Per-process scorer + writer. Create it once per worker process (or DoFn instance)."""

    def __init__(self, spec: JobSpec) -> None:
        self.spec = spec
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
            self._conn.close()
            self._conn = None

    def process(self, shard_id: str, tables: list[pa.Table]) -> dict[str, Any]:
        """Score and store one shard (all its rows); returns the shard's counts."""
        if self._model is None:
            self.open()
        assert self._model is not None
        if shard_id in self.spec.fail_shards:
            raise EngineError(f"injected fault in shard {shard_id}")
        started = time.perf_counter()
        table = pa.concat_tables(tables, promote_options="permissive") if len(tables) != 1 else tables[0]
        result = score_table(shard_id, table, self._model, batch_rows=self.spec.batch_rows)
        stored = write_shard(
            self._conn,
            run_id=self.spec.run_id,
            version_id=self.spec.version_id,
            result=result,
            attempt=self.spec.attempt,
            started=started,
        )
        return {
            "shard_id": shard_id,
            "stored": stored,
            "rows_in": result.rows_in,
            "rows_out": result.rows_out,
        }
