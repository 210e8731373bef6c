"""Physical ceilings of each stage, each alone in one process on the same rows as the pipeline.

* ``read``: pyarrow reading the key and input columns of every file (its own thread pool).
* ``model``: raw onnxruntime scoring the valid rows (validated with ``core.validate`` and fed with
  ``core.model.to_feed`` outside the clock) in batches of ``batch_rows``; only ``session.run`` is timed.
* ``write``: our COPY path alone (``store.writer.write_shard`` per shard of the same plan, into the
  version's predictions partition, then ``ledger.attach_partition`` builds the same indexes as ours);
  the predictions are computed before the clock starts.

Every ceiling is reported as *input* rows per second (input rows / stage seconds): how fast the whole
pipeline could go if only that stage existed.

    python -m benchmarks.ceilings read --input DIR
    python -m benchmarks.ceilings model --input DIR --models-dir M --model NAME --signature int8 --threads 2
    python -m benchmarks.ceilings write --input DIR --database-url URL
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from benchmarks.common import MODEL, print_json
from pipelines.core.card import Card
from pipelines.core.fingerprint import fingerprint_columns, input_fingerprint
from pipelines.core.inputs import list_input_files, read_table
from pipelines.core.keys import key_hash
from pipelines.core.model import load_model, to_feed
from pipelines.core.outputs import encode_outputs, label_values, score_values
from pipelines.core.score import PREDICTION_SCHEMA, ShardResult
from pipelines.core.shards import assign_shards, plan_shards
from pipelines.core.validate import REJECT_SCHEMA, validate
from pipelines.settings import DEFAULT_BATCH_ROWS, DEFAULT_MODELS_DIR, DEFAULT_SHARD_ROWS


def _columns(models_dir: Path, model: str) -> list[str]:
    card = load_model(models_dir, model).card
    return [card.key, *[c for c in card.input_names if c != card.key]]


def read_ceiling(source: Path, columns: list[str]) -> dict[str, Any]:
    """Stream every row's key and input columns through pyarrow's threaded scanner."""
    dataset = pads.dataset([str(p) for p in list_input_files(source)], format="parquet")
    started = time.perf_counter()
    rows = sum(batch.num_rows for batch in dataset.to_batches(columns=columns, use_threads=True))
    seconds = time.perf_counter() - started
    return {"stage": "read", "rows_in": rows, "seconds": seconds, "rows_per_s": rows / seconds}


def _valid_batches(source: Path, card: Card, columns: list[str], batch_rows: int) -> Iterator[pa.Table]:
    """The input's valid rows in batches of exactly ``batch_rows`` (the last may be short), across files."""
    pending: list[pa.Table] = []
    size = 0
    for path in list_input_files(source):
        good = validate(read_table(path, columns), card).good
        pending.append(good)
        size += good.num_rows
        while size >= batch_rows:
            merged = pa.concat_tables(pending).combine_chunks()
            yield merged.slice(0, batch_rows)
            pending, size = [merged.slice(batch_rows)], size - batch_rows
    if size:
        yield pa.concat_tables(pending).combine_chunks()


def model_ceiling(
    source: Path, models_dir: Path, model: str, *, signature: str, threads: int, batch_rows: int
) -> dict[str, Any]:
    """Time ``session.run`` alone over the valid rows of the input, file by file (memory stays flat)."""
    loaded = load_model(models_dir, model, signature=signature)
    card = loaded.card
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(
        str(loaded.version_dir / loaded.file_name), options, providers=["CPUExecutionProvider"]
    )
    columns = [card.key, *[c for c in card.input_names if c != card.key]]
    names = [spec.name for spec in card.outputs]
    rows_in = rows_valid = 0
    seconds = 0.0
    warmed = False
    for batch in _valid_batches(source, card, columns, batch_rows):
        feed = to_feed(card, batch)
        if not warmed:  # first runs allocate: not part of the steady state
            session.run(names, feed)
            warmed = True
        started = time.perf_counter()
        session.run(names, feed)
        seconds += time.perf_counter() - started
        rows_valid += batch.num_rows
    rows_in = sum(pq.ParquetFile(p).metadata.num_rows for p in list_input_files(source))
    return {
        "stage": f"model:{model}:{signature}",
        "file": loaded.file_name,
        "threads": threads,
        "rows_in": rows_in,
        "rows_valid": rows_valid,
        "seconds": seconds,
        "rows_per_s": rows_in / seconds if seconds else 0.0,
        "valid_rows_per_s": rows_valid / seconds if seconds else 0.0,
    }


def _predictions(source: Path, models_dir: Path, model: str) -> tuple[Any, pa.Table, int]:
    loaded = load_model(models_dir, model, threads=2)
    card = loaded.card
    columns = [card.key, *card.columns]
    parts, rows_in = [], 0
    for path in list_input_files(source):
        checked = validate(read_table(path, columns), card)
        rows_in += checked.good.num_rows + checked.rejects.num_rows
        out = loaded.predict(checked.good, batch_rows=DEFAULT_BATCH_ROWS)
        label = label_values(card, out)
        n = checked.good.num_rows
        parts.append(
            pa.table(
                [
                    checked.good.column(card.key),
                    pa.array(score_values(card, out)),
                    pa.array(label, pa.int64()) if label is not None else pa.nulls(n, pa.int64()),
                    encode_outputs(card, out, n),
                    pa.array(input_fingerprint(checked.good, fingerprint_columns(card)), pa.int64()),
                ],
                schema=PREDICTION_SCHEMA,
            )
        )
    return loaded, pa.concat_tables(parts).combine_chunks(), rows_in


def write_ceiling(
    source: Path, database_url: str, models_dir: Path, model: str, shard_rows: int, *, outputs: bool = True
) -> dict[str, Any]:
    """COPY the predictions shard by shard (our writer) into a new version partition, then index it.

    ``outputs=False`` leaves the ``outputs`` jsonb column out (to measure what storing it costs).
    """
    from pipelines.store import ledger
    from pipelines.store.db import connect, migrate
    from pipelines.store.writer import write_shard

    loaded, predictions, rows_in = _predictions(source, models_dir, model)
    if not outputs:
        predictions = predictions.drop_columns(["outputs"])
    hashes = key_hash(predictions.column("key"))
    shards = plan_shards(hashes, shard_rows)
    positions = assign_shards(hashes, shards)
    order = np.argsort(positions, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(positions, minlength=len(shards)))])
    pieces = [predictions.take(pa.array(order[a:b])) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    migrate(database_url)
    with connect(database_url, autocommit=True) as conn:
        with conn.transaction():
            version_id = ledger.register_version(conn, loaded)
            run_id = ledger.create_run(
                conn,
                version_id=version_id,
                model=loaded,
                engine="ceiling",
                input_uri=str(source),
                fingerprint="ceiling",
                shard_rows=shard_rows,
                shards=shards,
            )
        started = time.perf_counter()
        for shard, piece in zip(shards, pieces, strict=True):
            result = ShardResult(shard.shard_id, piece.num_rows, piece, REJECT_SCHEMA.empty_table())
            write_shard(conn, run_id=run_id, version_id=version_id, result=result, attempt=1, started=started)
        copied = time.perf_counter() - started
        with conn.transaction():
            ledger.attach_partition(conn, version_id)
        seconds = time.perf_counter() - started
    return {
        "stage": "write",
        "rows_in": rows_in,
        "rows_written": predictions.num_rows,
        "shards": len(shards),
        "copy_seconds": copied,
        "index_seconds": seconds - copied,
        "seconds": seconds,
        "rows_per_s": rows_in / seconds,
        "written_rows_per_s": predictions.num_rows / seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=("read", "model", "write"))
    parser.add_argument("--input", type=Path, required=True)
    parser.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS_DIR)
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--signature", default="int8")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-rows", type=int, default=DEFAULT_BATCH_ROWS)
    parser.add_argument("--shard-rows", type=int, default=DEFAULT_SHARD_ROWS)
    parser.add_argument("--database-url")
    args = parser.parse_args()
    if args.stage == "read":
        print_json(read_ceiling(args.input, _columns(args.models_dir, args.model)))
    elif args.stage == "model":
        print_json(
            model_ceiling(
                args.input,
                args.models_dir,
                args.model,
                signature=args.signature,
                threads=args.threads,
                batch_rows=args.batch_rows,
            )
        )
    else:
        if not args.database_url:
            parser.error("write needs --database-url")
        print_json(write_ceiling(args.input, args.database_url, args.models_dir, args.model, args.shard_rows))


if __name__ == "__main__":
    main()
