"""The "simple pipeline": what one person writes in an afternoon, one process, no guarantees.

Read the Parquet files -> int8 onnxruntime (1 intra-op thread, 8192-row batches) -> COPY into an
unindexed table -> CREATE INDEX on (key, run_id). No validation beyond dropping rows with a null
input, no ledger, no exactly-once, no rejects. It is the baseline ``e2e_vs_ceiling`` is measured
against (the best ``--copy`` method), and its stage timings are the honest per-stage ceilings.

``--copy`` picks the write: ``csv`` (pyarrow CSV text), ``binary`` (``pipelines.store.binary_copy``),
``adbc`` (the ADBC PostgreSQL driver's Arrow bulk ingest: binary COPY built in C++).
``--unlogged`` loads into an UNLOGGED table and makes it logged after the index (crash-safe again,
at the cost of writing the whole table to the WAL once).

    python -m benchmarks.simple_pipeline --input DIR --database-url URL [--copy binary] [--unlogged]
"""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from benchmarks.common import MODEL, print_json
from pipelines.core.inputs import list_input_files
from pipelines.core.model import load_model, to_feed
from pipelines.settings import DEFAULT_MODELS_DIR

TABLE = "simple_predictions"
BATCH_ROWS = 8192
COPY_METHODS = ("csv", "binary", "adbc")


def _ddl(unlogged: bool) -> str:
    kind = "UNLOGGED TABLE" if unlogged else "TABLE"
    return (
        f"DROP TABLE IF EXISTS {TABLE}; CREATE {kind} {TABLE} (version_id integer NOT NULL, "
        'run_id bigint NOT NULL, key text COLLATE "C" NOT NULL, score real NOT NULL, label bigint)'
    )


def _writer(method: str, url: str) -> tuple[Any, Any]:
    """(write(table), close()) for one COPY method; each write is its own COPY of one batch."""
    if method == "adbc":
        import adbc_driver_postgresql.dbapi as adbc

        aconn = adbc.connect(url)
        cursor = aconn.cursor()

        def write_adbc(table: pa.Table) -> None:
            cursor.adbc_ingest(TABLE, table, mode="append")

        def close_adbc() -> None:
            aconn.commit()
            cursor.close()
            aconn.close()

        return write_adbc, close_adbc
    from pipelines.store.binary_copy import encode

    conn = psycopg.connect(url, autocommit=True)
    statement = f"COPY {TABLE} FROM STDIN (FORMAT {method})"
    options = pacsv.WriteOptions(include_header=False)

    def write_copy(table: pa.Table) -> None:
        if method == "binary":
            payload = encode(table)
        else:
            sink = io.BytesIO()
            pacsv.write_csv(table, sink, write_options=options)
            payload = sink.getvalue()
        with conn.cursor().copy(statement) as copy:
            copy.write(payload)

    return write_copy, conn.close


def run(source: Path, url: str, *, copy: str, unlogged: bool, flush_rows: int) -> dict[str, Any]:
    """The whole pipeline; returns rows and seconds per stage (read, model, write, index)."""
    started = time.perf_counter()
    model = load_model(DEFAULT_MODELS_DIR, MODEL)
    card = model.card
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(model.version_dir / model.file_name), options)
    columns = [card.key, *[c for c in card.input_names if c != card.key]]
    names = [o.name for o in card.outputs]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(_ddl(unlogged))  # type: ignore[arg-type]  # constant DDL
    write, close = _writer(copy, url)
    seconds = {"read": 0.0, "model": 0.0, "write": 0.0}
    rows_in = rows_out = 0
    pending: list[pa.Table] = []
    pending_rows = 0

    def flush() -> None:
        nonlocal pending, pending_rows
        if pending:
            t = time.perf_counter()
            write(pa.concat_tables(pending))
            seconds["write"] += time.perf_counter() - t
        pending, pending_rows = [], 0

    for path in list_input_files(source):
        t = time.perf_counter()
        handle = pq.ParquetFile(path)
        batches = list(handle.iter_batches(batch_size=BATCH_ROWS, columns=columns))
        seconds["read"] += time.perf_counter() - t
        for batch in batches:
            t = time.perf_counter()
            rows_in += batch.num_rows
            table = pa.Table.from_batches([batch]).drop_null()
            table = table.cast(pa.schema([(c, _arrow(card, c, table)) for c in table.column_names]))
            if table.num_rows == 0:
                seconds["model"] += time.perf_counter() - t
                continue
            score, label = session.run(names, to_feed(card, table))
            n = table.num_rows
            out = pa.table(
                {
                    "version_id": pa.array(np.ones(n, np.int32)),
                    "run_id": pa.array(np.ones(n, np.int64)),
                    "key": table.column(card.key),
                    "score": pa.array(np.asarray(score, np.float32).reshape(-1)),
                    "label": pa.array(np.asarray(label, np.int64).reshape(-1)),
                }
            )
            seconds["model"] += time.perf_counter() - t
            rows_out += n
            pending.append(out)
            pending_rows += n
            if pending_rows >= flush_rows:
                flush()
    flush()
    close()
    t = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE INDEX ON {TABLE} (key, run_id)")  # type: ignore[arg-type]
        if unlogged:
            conn.execute(f"ALTER TABLE {TABLE} SET LOGGED")  # type: ignore[arg-type]
    seconds["index"] = time.perf_counter() - t
    total = time.perf_counter() - started
    return {
        "stage": f"simple:{copy}{':unlogged' if unlogged else ''}",
        "copy": copy,
        "unlogged": unlogged,
        "rows_in": rows_in,
        "rows_written": rows_out,
        "stage_seconds": {k: round(v, 3) for k, v in seconds.items()},
        "seconds": total,
        "rows_per_s": rows_in / total,
    }


def _arrow(card: Any, column: str, table: pa.Table) -> pa.DataType:
    from pipelines.core.model import arrow_type

    specs = {spec.name: spec.dtype for spec in card.inputs}
    return arrow_type(specs[column]) if column in specs else table.schema.field(column).type


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, required=True)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--copy", choices=COPY_METHODS, default="csv")
    parser.add_argument("--unlogged", action="store_true")
    parser.add_argument("--flush-rows", type=int, default=65_536, help="rows per COPY statement")
    args = parser.parse_args()
    print_json(
        run(args.input, args.database_url, copy=args.copy, unlogged=args.unlogged, flush_rows=args.flush_rows)
    )


if __name__ == "__main__":
    main()
