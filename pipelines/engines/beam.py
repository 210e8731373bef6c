"""Apache Beam adapter: files -> (shard, Arrow table) pieces -> GroupByKey -> score + write.

Elements are Arrow tables (a file's rows of one shard), never single rows. The default
runner is the DirectRunner in multi-process mode; any other runner (Flink, Spark,
Dataflow) takes over through pass-through pipeline options.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apache_beam as beam
import pyarrow as pa
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.core.inputs import iter_tables
from pipelines.engines.spec import JobSpec, ShardWorker, split_by_shard

#: Rows read per slice of a file before it is cut by shard (bounds a worker's memory).
READ_SLICE_ROWS = 262_144


class ReadAndSplit(beam.DoFn):  # type: ignore[misc]
    """One input file -> (shard_id, table) pieces, one per shard present in each slice."""

    def __init__(self, spec: JobSpec) -> None:
        self.spec = spec

    def process(self, path: str) -> Iterator[tuple[str, pa.Table]]:
        for table in iter_tables(Path(path), self.spec.columns, batch_rows=READ_SLICE_ROWS):
            yield from split_by_shard(table, self.spec)


class ScoreAndWrite(beam.DoFn):  # type: ignore[misc]
    """(shard_id, [tables]) -> validated, scored and stored exactly once."""

    def __init__(self, spec: JobSpec) -> None:
        self.spec = spec
        self.worker: ShardWorker | None = None

    def setup(self) -> None:
        # The ONNX session itself is cached per process in core.model: one per worker process.
        self.worker = ShardWorker(self.spec)
        self.worker.open()

    def process(self, element: tuple[str, list[pa.Table]]) -> Iterator[dict[str, Any]]:
        assert self.worker is not None
        shard_id, tables = element
        yield self.worker.process(shard_id, list(tables))

    def teardown(self) -> None:
        if self.worker is not None:
            self.worker.close()


def pipeline_options(spec: JobSpec) -> PipelineOptions:
    """DirectRunner multi-process by default; ``engine_options['beam_args']`` passes anything else."""
    args = list(spec.engine_options.get("beam_args", []))
    if not any(a.startswith("--runner") for a in args):
        args += [
            "--runner=DirectRunner",
            "--direct_running_mode=multi_processing",
            f"--direct_num_workers={spec.workers}",
            "--default_sdk_harness_log_level=WARNING",
        ]
    return PipelineOptions(args)


def execute(spec: JobSpec) -> None:
    """Run the Beam pipeline for the spec's pending shards; returns when it has finished."""
    if not spec.shards:
        return
    with beam.Pipeline(options=pipeline_options(spec)) as pipeline:
        _ = (
            pipeline
            | "Files" >> beam.Create([str(p) for p in spec.files])
            | "Spread" >> beam.Reshuffle()
            | "ReadAndSplit" >> beam.ParDo(ReadAndSplit(spec))
            | "GroupByShard" >> beam.GroupByKey()
            | "ScoreAndWrite" >> beam.ParDo(ScoreAndWrite(spec))
        )
