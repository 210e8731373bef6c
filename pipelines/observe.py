"""Observe a scored run: input and output statistics, drift against the model card, run timings.

The statistics are computed the way the card's ``reference_stats`` were (inputs coerced to the
card's dtypes, i.e. the rows the model actually saw; the stored outputs), streamed in batches and
added up with ``merge_stats``, so a large run never has to fit in memory. The result is stored in
``run_stats`` (one row per run; observing again replaces it).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pyarrow as pa
from psycopg import sql
from psycopg.types.json import Jsonb

from pipelines.core.card import Card
from pipelines.core.inputs import iter_tables, list_input_files
from pipelines.core.stats import ColumnStats, column_stats, counted_stats, drift, merge_stats, typed_outputs
from pipelines.core.validate import good_rows
from pipelines.errors import RunStateError
from pipelines.settings import Settings
from pipelines.store import ledger
from pipelines.store.db import connection

log = logging.getLogger(__name__)

#: PSI above this is commonly read as a significant shift; observe logs a warning for such columns.
DRIFT_ALERT_PSI = 0.25
OUTPUT_FETCH_ROWS = 100_000
#: Input rows read at a time (statistics merge exactly, so the size only trades memory for calls).
INPUT_BATCH_ROWS = 65_536

_UPSERT_SQL = """
INSERT INTO run_stats (run_id, input_stats, output_stats, drift) VALUES (%s, %s, %s, %s)
ON CONFLICT (run_id) DO UPDATE SET input_stats = EXCLUDED.input_stats, output_stats = EXCLUDED.output_stats,
    drift = EXCLUDED.drift, created_at = now()
"""


def streamed_stats(
    tables: Iterable[pa.Table], columns: list[str], reference: dict[str, ColumnStats]
) -> dict[str, ColumnStats]:
    """Statistics of ``columns`` over all ``tables`` as if they were one table.

    Columns the reference lacks get the first non-empty table's histogram edges and top values as
    their reference, so every part shares buckets and the parts add up exactly.
    """
    shared = {name: stats for name, stats in reference.items() if name in columns}
    parts: list[dict[str, ColumnStats]] = []
    empty: pa.Table | None = None
    for table in tables:
        if table.num_rows == 0:
            empty = table
            continue
        missing = [name for name in columns if name not in shared]
        if missing:
            shared.update(column_stats(table, missing))
        parts.append(column_stats(table, columns, reference=shared))
    if not parts:
        return column_stats(empty, columns, reference=shared) if empty is not None else {}
    return merge_stats(parts)


def _scored_inputs(source: Path, card: Card, *, batch_rows: int) -> Iterator[pa.Table]:
    """The input rows the model saw (valid rows, coerced to the card's dtypes), in batches."""
    columns = [card.key, *card.columns]
    for path in list_input_files(source):
        for table in iter_tables(path, columns, batch_rows=batch_rows):
            yield good_rows(table, card).select(card.scalar_columns)


def _stored_outputs(conn: psycopg.Connection[Any], run_id: int, card: Card) -> Iterator[pa.Table]:
    """The run's stored typed outputs (score, and label when the model has one), in batches."""
    names = typed_outputs(card)
    types = [pa.float32(), pa.int64()][: len(names)]
    query = sql.SQL("SELECT {} FROM predictions WHERE run_id = %s").format(
        sql.SQL(", ").join(sql.Identifier(name) for name in names)
    )
    with conn.transaction(), conn.cursor(name=f"observe_{run_id}") as cur:
        cur.execute(query, (run_id,))
        while rows := cur.fetchmany(OUTPUT_FETCH_ROWS):
            columns = list(zip(*rows, strict=True))
            yield pa.table(
                [pa.array(values, kind) for values, kind in zip(columns, types, strict=True)], names=names
            )


def _grouped_output_stats(conn: psycopg.Connection[Any], run_id: int, name: str) -> ColumnStats:
    """Statistics of one stored output column from the server's count of each value.

    For outputs with few distinct values (a label): one aggregate instead of every row over the
    wire. The histogram's edges are the deciles of the whole column (a reference would fix them).
    """
    query = sql.SQL("SELECT {0}, count(*) FROM predictions WHERE run_id = %s GROUP BY 1").format(
        sql.Identifier(name)
    )
    rows = conn.execute(query, (run_id,)).fetchall()
    nulls = sum(count for value, count in rows if value is None)
    present = [(value, count) for value, count in rows if value is not None]
    values = np.array([v for v, _ in present], np.int64)
    return counted_stats(values, np.array([c for _, c in present], np.int64), nulls)


def _shard_parts(conn: psycopg.Connection[Any], run_id: int) -> list[dict[str, Any]] | None:
    """Every shard's statistics (``core.stats.shard_stats``), or None if any shard took none."""
    parts = [row[0] for row in conn.execute("SELECT stats FROM run_shards WHERE run_id = %s", (run_id,))]
    return None if any(part is None for part in parts) else parts


def _registered_card(conn: psycopg.Connection[Any], version_id: int) -> Card:
    """The card as registered when the run was planned (the one its rows were scored with)."""
    row = conn.execute("SELECT card FROM model_versions WHERE version_id = %s", (version_id,)).fetchone()
    if row is None:
        raise RunStateError(f"model version {version_id} is not registered; plan the run again")
    return Card.model_validate(row[0])


def observe_run(settings: Settings, run_id: int) -> dict[str, Any]:
    """Compute and store the run's input/output statistics and their drift from the card's reference.

    Returns:
        ``run_id``, ``model``, ``version``, ``status``, ``rows_in`` / ``rows_out`` / ``rows_rejected``,
        ``seconds``, ``rows_per_s``, ``input_stats``, ``output_stats``, ``drift`` (column -> PSI) and
        ``drifted`` (columns whose PSI exceeds ``DRIFT_ALERT_PSI``).

    Raises:
        PredcacheError: no such run, or its input can no longer be read.
    """
    from pipelines.store.cache import cache_url

    with connection(cache_url(settings), autocommit=True) as conn:
        run = ledger.get_run(conn, run_id)
        card = _registered_card(conn, run.version_id)
        shards = _shard_parts(conn, run_id)
        # An incremental run's planner saw every row (its shards only the rescored ones); else the
        # shards' own parts; else, for runs whose shards took none, the input read again.
        input_stats = run.input_stats_plan
        if input_stats is None and shards is not None:
            input_stats = merge_stats([part["inputs"] for part in shards])
        if input_stats is None:
            input_stats = streamed_stats(
                _scored_inputs(Path(run.input_uri), card, batch_rows=INPUT_BATCH_ROWS),
                card.scalar_columns,
                card.reference_stats,
            )
        outputs = typed_outputs(card)
        if shards is not None:
            output_stats = merge_stats([part["outputs"] for part in shards])
            for name in outputs:
                if name not in output_stats:  # no reference (e.g. a label): counted by the server
                    output_stats[name] = _grouped_output_stats(conn, run_id, name)
        else:
            output_stats = streamed_stats(_stored_outputs(conn, run_id, card), outputs, card.reference_stats)
        psi = drift(card.reference_stats, {**input_stats, **output_stats})
        conn.execute(_UPSERT_SQL, (run_id, Jsonb(input_stats), Jsonb(output_stats), Jsonb(psi)))
    drifted = sorted(name for name, value in psi.items() if value > DRIFT_ALERT_PSI)
    if drifted:
        log.warning("run %s: drift above PSI %s in %s", run_id, DRIFT_ALERT_PSI, ", ".join(drifted))
    rows_in = run.rows_in or 0
    return {
        "run_id": run_id,
        "model": run.model,
        "version": run.version,
        "status": run.status,
        "rows_in": rows_in,
        "rows_out": run.rows_out or 0,
        "rows_rejected": run.rows_rejected or 0,
        "seconds": run.seconds,
        "rows_per_s": round(rows_in / run.seconds, 1) if run.seconds else None,
        "input_stats": input_stats,
        "output_stats": output_stats,
        "drift": psi,
        "drifted": drifted,
    }
