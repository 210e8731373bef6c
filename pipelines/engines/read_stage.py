"""The read stage both engines run: one task's files, cut by shard, written to scratch as pieces.

A task reads its files in slices, holds up to ``READ_FLUSH_ROWS`` rows (flat memory whatever the
input), cuts them by shard with one sort (``worker.split_by_shard``) and writes one Arrow IPC
piece per shard (``scratch``); it yields ``(shard_id, path)`` for the shuffle. A retried task
writes the same paths with the same rows (the input is fixed by its fingerprint).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from pipelines.core.inputs import iter_tables
from pipelines.engines import scratch
from pipelines.engines.spec import JobSpec
from pipelines.engines.worker import split_by_shard

#: Rows read per slice of a file before it is cut by shard.
READ_SLICE_ROWS = 262_144
#: A task writes out what it holds once it holds this many rows (a larger bound makes fewer,
#: larger pieces: pieces = input rows / this x shards).
READ_FLUSH_ROWS = 262_144


def read_task(spec: JobSpec, attempt_dir: str, index: int, paths: list[str]) -> Iterator[tuple[str, str]]:
    """Task ``index`` over ``paths``: its rows cut by shard and written under ``attempt_dir``."""
    fs, _ = scratch.Scratch(str(spec.engine_options["scratch_uri"])).filesystem()
    held: list[pa.Table] = []
    rows = part = 0
    for path in paths:
        for table in iter_tables(Path(path), spec.columns, batch_rows=READ_SLICE_ROWS):
            held.append(table)
            rows += table.num_rows
            if rows >= READ_FLUSH_ROWS:
                batch, held, rows = held, [], 0
                yield from _write(fs, spec, attempt_dir, batch, index, part)
                part += 1
    yield from _write(fs, spec, attempt_dir, held, index, part)


def _write(
    fs: Any, spec: JobSpec, attempt_dir: str, held: list[pa.Table], index: int, part: int
) -> Iterator[tuple[str, str]]:
    """Cut what the task holds by shard and write one piece per shard."""
    if not held:
        return
    # The held slices are dropped as soon as the sorted copy exists (memory: about two slices' worth).
    pieces = split_by_shard(pa.concat_tables(held, promote_options="permissive"), spec)
    held.clear()
    for shard_id, piece in pieces:
        yield shard_id, scratch.write_piece(fs, scratch.piece_path(attempt_dir, shard_id, index, part), piece)
