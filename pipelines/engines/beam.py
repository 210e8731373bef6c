"""Apache Beam adapter: files -> (shard, Arrow table) pieces -> GroupByKey -> score + write.

Elements are Arrow tables (a file's rows of one shard), never single rows. The default
runner is the DirectRunner in multi-process mode; any other runner (Flink, Spark,
Dataflow) takes over through pass-through pipeline options.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import apache_beam as beam
import pyarrow as pa
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.core.inputs import group_files, iter_tables, read_task_count
from pipelines.core.shards import Shard
from pipelines.engines.shipping import localize_model, ship_beam
from pipelines.engines.spec import JobSpec
from pipelines.engines.worker import ShardWorker, split_by_shard
from pipelines.settings import DEFAULT_BEAM_WAVE_ROWS

#: Rows read per slice of a file before it is cut by shard.
READ_SLICE_ROWS = 262_144
#: Parquet bytes per read task: few, large elements (a read task emits one table per shard).
READ_GROUP_BYTES = 64 << 20


class ReadAndSplit(beam.DoFn):  # type: ignore[misc]
    """A group of input files -> one (shard_id, table) element per shard present in the group."""

    def __init__(self, spec: JobSpec) -> None:
        self.spec = spec

    def process(self, paths: list[str]) -> Iterator[tuple[str, pa.Table]]:
        pieces: dict[str, list[pa.Table]] = {}
        for path in paths:
            for table in iter_tables(Path(path), self.spec.columns, batch_rows=READ_SLICE_ROWS):
                for shard_id, piece in split_by_shard(table, self.spec):
                    pieces.setdefault(shard_id, []).append(piece)
        for shard_id, tables in pieces.items():
            yield shard_id, pa.concat_tables(tables, promote_options="permissive").combine_chunks()


class ScoreAndWrite(beam.DoFn):  # type: ignore[misc]
    """(shard_id, [tables]) -> validated, scored and stored exactly once."""

    def __init__(self, spec: JobSpec) -> None:
        self.spec = spec
        self.worker: ShardWorker | None = None

    def setup(self) -> None:
        # The ONNX session itself is cached per process in core.model: one per worker process.
        self.worker = ShardWorker(localize_model(self.spec))
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


def waves(shards: list[Shard], max_rows: int) -> list[list[Shard]]:
    """Consecutive groups of shards holding at most ``max_rows`` planned rows each (one shard at least)."""
    out: list[list[Shard]] = []
    rows = 0
    for shard in shards:
        if out and rows + shard.rows <= max_rows:
            out[-1].append(shard)
            rows += shard.rows
        else:
            out.append([shard])
            rows = shard.rows
    return out


def execute(spec: JobSpec) -> None:
    """Run the Beam pipeline over the spec's pending shards, wave by wave; returns when done.

    The DirectRunner keeps a GroupByKey's whole input in memory, so a run is scored in
    waves of at most ``engine_options["wave_rows"]`` planned rows: one pipeline per wave,
    whose readers drop the rows of other shards. Memory is bounded by the wave, not the
    input, at the cost of one more read of the input and one pipeline start per wave.
    """
    if not spec.shards:
        return
    spec = ship_beam(spec)  # a remote runner's workers get predcache and the model from the job
    groups = group_files(
        spec.files, read_task_count(spec.files, workers=spec.workers, group_bytes=READ_GROUP_BYTES)
    )
    read_tasks = [[str(p) for p in group] for group in groups]
    for wave in waves(spec.shards, int(spec.engine_options.get("wave_rows", DEFAULT_BEAM_WAVE_ROWS))):
        wave_spec = replace(spec, shards=wave)
        with beam.Pipeline(options=pipeline_options(wave_spec)) as pipeline:
            _ = (
                pipeline
                | "ReadTasks" >> beam.Create(read_tasks)
                | "Spread" >> beam.Reshuffle()
                | "ReadAndSplit" >> beam.ParDo(ReadAndSplit(wave_spec))
                | "GroupByShard" >> beam.GroupByKey()
                | "ScoreAndWrite" >> beam.ParDo(ScoreAndWrite(wave_spec))
            )
