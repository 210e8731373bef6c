"""Exactly-once shard writes: the shard's rows and its done marker commit together.

The shard's ledger counts are checked against the rows each COPY reports it stored, in the same
transaction, so verifying a run needs no scan of its rows.

The done marker is an UPDATE of the shard's ledger row from 'pending' to 'done', taken
first in the transaction: it locks the row, so a concurrent retry of the same shard waits,
then finds it done and writes nothing. A failure anywhere rolls the rows back with the marker.
"""

from __future__ import annotations

import io
import re
import time
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
from psycopg import sql
from psycopg.types.json import Jsonb

from pipelines.core.changes import stored_pairs
from pipelines.core.outputs import columns_to_store
from pipelines.core.score import ShardResult
from pipelines.errors import RowDataError, StoreError, TransientStoreError, flat_message
from pipelines.faults import fault_point
from pipelines.store.binary_copy import encode
from pipelines.store.incremental import write_pairs
from pipelines.store.ledger import partition_name

#: SQLSTATE classes of errors caused by the data sent (22 data exception, 23 integrity):
#: retrying the same rows fails the same way.
_DATA_ERROR_CLASSES = ("22", "23")

_CSV_OPTIONS = pacsv.WriteOptions(include_header=False, delimiter=",")


def _csv_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    # One chunk: pyarrow 25's CSV writer emits ~8 KB of NUL bytes for an empty first chunk.
    pacsv.write_csv(table.combine_chunks(), sink, write_options=_CSV_OPTIONS)
    return sink.getvalue()


def _copy(conn: psycopg.Connection[Any], target: sql.Composable, columns: list[str], table: pa.Table) -> int:
    """COPY ``table`` into ``target``; returns the rows the server says it stored."""
    if table.num_rows == 0:
        return 0
    payload, fmt = _copy_payload(table)
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT {})").format(
        target, sql.SQL(", ").join(sql.Identifier(c) for c in columns), sql.SQL(fmt)
    )
    cursor = conn.cursor()
    with cursor.copy(statement) as copy:
        copy.write(payload)
    return cursor.rowcount


#: String columns that load into jsonb columns (binary jsonb carries a version byte). Not
#: ``predictions.outputs``: it is ``json`` (sql/004), whose binary form is the plain text.
JSONB_COLUMNS = frozenset({"row"})


def _copy_payload(table: pa.Table) -> tuple[bytes, str]:
    """(payload, COPY format): binary (less CPU for client and server together), CSV for any
    column type the binary encoder does not know."""
    try:
        return encode(table, jsonb_columns=JSONB_COLUMNS & set(table.column_names)), "binary"
    except TypeError:
        return _csv_bytes(table), "csv"


def _check_copied(shard_id: str, what: str, copied: int, expected: int) -> None:
    """The ledger's counts are the COPY's own: a mismatch aborts the shard's transaction."""
    if copied != expected:
        raise StoreError(
            f"shard {shard_id}: the server stored {copied} {what}, the shard has {expected}; rerun to resume"
        )


def write_shard(
    conn: psycopg.Connection[Any],
    *,
    run_id: int,
    version_id: int,
    result: ShardResult,
    attempt: int,
    started: float,
) -> bool:
    """Store one scored shard exactly once.

    Args:
        conn: an autocommit connection (this function owns its transaction).
        run_id: the run.
        version_id: the model version (its predictions partition receives the rows).
        result: the scored shard.
        attempt: the run attempt, recorded with the done marker.
        started: ``time.perf_counter()`` when work on the shard began (the ledger records
            the shard's seconds up to just before commit, COPY included).

    Returns:
        True if this call stored the shard, False if it was already done (nothing written).

    Raises:
        RowDataError: the database refused a value of one row (named; retrying cannot help).
        TransientStoreError: the connection broke or a lock wait timed out (retry: nothing was stored).
        StoreError: any other refusal (the transaction was rolled back).
    """
    pairs = stored_pairs(result.predictions)  # hashed before the transaction: it holds locks
    try:
        with conn.transaction():
            marked = conn.execute(
                "UPDATE run_shards SET status = 'done', rows_in = %s, rows_out = %s, rows_rejected = %s, "
                "attempt = %s, stats = %s WHERE run_id = %s AND shard_id = %s AND status = 'pending'",
                (
                    result.rows_in,
                    result.rows_out,
                    result.rows_rejected,
                    attempt,
                    Jsonb(result.stats) if result.stats is not None else None,
                    run_id,
                    result.shard_id,
                ),
            )
            if marked.rowcount == 0:
                return False
            fault_point("shard.after_marker")
            n = result.predictions.num_rows
            predictions = (
                columns_to_store(result.predictions)
                .add_column(0, "run_id", pa.array([run_id] * n, pa.int64()))
                .add_column(0, "version_id", pa.array([version_id] * n, pa.int32()))
            )
            copied = _copy(
                conn, sql.Identifier(partition_name(version_id)), predictions.column_names, predictions
            )
            _check_copied(result.shard_id, "predictions", copied, result.rows_out)
            m = result.rejects.num_rows
            rejects = result.rejects.add_column(
                0, "shard_id", pa.array([result.shard_id] * m, pa.string())
            ).add_column(0, "run_id", pa.array([run_id] * m, pa.int64()))
            copied = _copy(conn, sql.Identifier("rejects"), rejects.column_names, rejects)
            _check_copied(result.shard_id, "rejects", copied, result.rows_rejected)
            # What the next incremental run compares with (core.changes), committed with the rows.
            write_pairs(conn, run_id, result.shard_id, pairs)
            conn.execute(
                "UPDATE run_shards SET seconds = %s, done_at = clock_timestamp() "
                "WHERE run_id = %s AND shard_id = %s",
                (time.perf_counter() - started, run_id, result.shard_id),
            )
            fault_point("shard.after_copy")
    except psycopg.Error as exc:
        raise classify(exc, run_id=run_id, result=result) from exc
    fault_point("shard.after_commit")
    return True


def classify(exc: psycopg.Error, *, run_id: int, result: ShardResult) -> StoreError:
    """The error to raise for a failed shard write: data (names the row), transient, or other."""
    detail = flat_message(exc, limit=300)
    where = f"shard {result.shard_id} of run {run_id}"
    state = exc.sqlstate or ""
    if isinstance(exc, psycopg.errors.LockNotAvailable | psycopg.errors.QueryCanceled) or (
        isinstance(exc, psycopg.OperationalError) and not state.startswith(_DATA_ERROR_CLASSES)
    ):
        return TransientStoreError(f"writing {where} was interrupted ({detail}); it is retried, or rerun")
    if state.startswith(_DATA_ERROR_CLASSES):
        return RowDataError(
            f"the database refused a value of {where}{_row_named(exc, result)} ({detail}); "
            "this row cannot be stored as it is: fix or remove it in the input (retrying cannot help)"
        )
    return StoreError(f"writing {where} failed ({detail}); rerun to resume")


def _row_named(exc: psycopg.Error, result: ShardResult) -> str:
    """ ", row N (key K)" from a COPY error's context ("COPY predictions_v1, line N, ..."), if known."""
    context = exc.diag.context or ""
    found = re.search(r"COPY (\w+), line (\d+)", context)
    if not found:
        return ""
    table = result.rejects if found.group(1) == "rejects" else result.predictions
    line = int(found.group(2))
    if not 1 <= line <= table.num_rows:
        return f", {found.group(1)} row {line}"
    key = table.column("key")[line - 1].as_py()
    return f", {found.group(1)} row {line} (key {key!r})"
