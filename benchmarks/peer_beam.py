"""The Beam peer, written the way Beam's docs show: ``RunInference`` with a keyed ONNX numpy handler.

    ReadFromParquet (one dict per row) -> drop rows with a null/NaN input -> (key, row array)
    -> RunInference(KeyedModelHandler(OnnxModelHandlerNumpy(model, inference_fn=...)))
    -> (version_id, run_id, key, score, label) -> BatchElements -> psycopg ``executemany`` INSERT
       into a plain table (same columns and indexes as ours).

The one adapter: ``OnnxModelHandlerNumpy`` feeds one stacked array to the graph's first input, and
the flights model takes one [N, 1] input per column; the documented ``inference_fn`` hook builds
that feed (``feed_by_column``: stack the batch's row arrays, cut them into typed columns). Same
runner settings as ours: DirectRunner, multi-processing, two workers.

    python -m benchmarks.peer_beam --input DIR --model-file PATH --database-url URL
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import apache_beam as beam
import numpy as np
import onnxruntime as ort
import psycopg
from apache_beam.ml.inference.base import KeyedModelHandler, PredictionResult, RunInference
from apache_beam.ml.inference.onnx_inference import OnnxModelHandlerNumpy
from apache_beam.options.pipeline_options import PipelineOptions

from benchmarks.common import PEER_COLUMNS, PEER_RUN_ID, PEER_TABLE, PEER_VERSION_ID, print_json

KEY = "flight_id"
#: Rows per INSERT batch (BatchElements adapts between these).
INSERT_BATCH = (500, 5_000)
_NUMPY = {"tensor(string)": object, "tensor(int64)": np.int64, "tensor(float)": np.float32}


def feed_by_column(
    session: ort.InferenceSession, batch: Sequence[np.ndarray], inference_args: dict[str, Any] | None = None
) -> dict[str, np.ndarray]:
    """The ``inference_fn``: rows (object arrays in graph-input order) -> one [N, 1] tensor per input."""
    rows = np.stack(batch, axis=0)
    feed = {
        spec.name: rows[:, j].astype(_NUMPY[spec.type]).reshape(-1, 1)
        for j, spec in enumerate(session.get_inputs())
    }
    score, label = session.run(["score", "label"], feed)
    return {"score": np.asarray(score), "label": np.asarray(label)}


class InsertBatches(beam.DoFn):  # type: ignore[misc]
    """A batched INSERT sink: one ``executemany`` and commit per batch of rows."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.conn: Any = None

    def setup(self) -> None:
        self.conn = psycopg.connect(self.url)

    def process(self, rows: list[tuple[Any, ...]]) -> Iterable[int]:
        names = ", ".join(PEER_COLUMNS)
        marks = ", ".join(["%s"] * len(PEER_COLUMNS))
        with self.conn.cursor() as cur:
            cur.executemany(f"INSERT INTO {PEER_TABLE} ({names}) VALUES ({marks})", rows)
        self.conn.commit()
        yield len(rows)

    def teardown(self) -> None:
        if self.conn is not None:
            self.conn.close()


def _complete(row: dict[str, Any], inputs: list[str]) -> bool:
    if not row[KEY]:
        return False
    return all(row[c] is not None and not (isinstance(row[c], float) and math.isnan(row[c])) for c in inputs)


def _to_row(element: tuple[str, PredictionResult]) -> tuple[Any, ...]:
    key, result = element
    return (
        PEER_VERSION_ID,
        PEER_RUN_ID,
        key,
        float(result.inference["score"]),
        int(result.inference["label"]),
    )


def run(source: Path, model_file: Path, url: str, *, workers: int) -> None:
    inputs = [spec.name for spec in ort.InferenceSession(str(model_file)).get_inputs()]
    handler = KeyedModelHandler(
        OnnxModelHandlerNumpy(
            str(model_file), providers=["CPUExecutionProvider"], inference_fn=feed_by_column
        )
    )
    options = PipelineOptions(
        [
            "--runner=DirectRunner",
            "--direct_running_mode=multi_processing",
            f"--direct_num_workers={workers}",
        ]
    )
    with beam.Pipeline(options=options) as pipeline:
        _ = (
            pipeline
            | beam.io.ReadFromParquet(f"{source}/*/*.parquet", columns=[KEY, *inputs])
            | "Complete" >> beam.Filter(_complete, inputs)
            | "Keyed" >> beam.Map(lambda row: (row[KEY], np.array([row[c] for c in inputs], dtype=object)))
            | RunInference(handler)
            | "Row" >> beam.Map(_to_row)
            | beam.BatchElements(min_batch_size=INSERT_BATCH[0], max_batch_size=INSERT_BATCH[1])
            | beam.ParDo(InsertBatches(url))
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, required=True)
    parser.add_argument("--model-file", type=Path, required=True)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    started = time.perf_counter()
    run(args.input, args.model_file, args.database_url, workers=args.workers)
    print_json({"scenario": "peer_beam", "seconds_inside": time.perf_counter() - started})


if __name__ == "__main__":
    main()
