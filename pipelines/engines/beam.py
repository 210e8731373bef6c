"""Apache Beam adapter: files -> (shard, piece reference) -> GroupByKey -> score + write.

The shuffle moves references, not rows: the read stage writes each (read task, shard) piece once
as an Arrow IPC file under the run's scratch folder (``engines.scratch``) and emits
``(shard_id, path)``; the score stage memory-maps its shard's pieces, scores and writes them
exactly once, then deletes them. The DirectRunner's in-memory GroupByKey holds a few bytes per
piece, so memory stays flat however large the input.

The default runner is the DirectRunner with one thread per worker (``pipeline_options``), and
single-threaded for small runs. Any other runner (Flink, Spark, Dataflow) takes
over through pass-through pipeline options; its scratch must then be storage every worker sees
(``PREDCACHE_SCRATCH_URI``, any pyarrow filesystem URI).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.core.inputs import group_files, read_task_count
from pipelines.engines import scratch
from pipelines.engines.read_stage import read_task
from pipelines.engines.shipping import localize_model, ship_beam
from pipelines.engines.spec import JobSpec
from pipelines.engines.worker import ShardWorker
from pipelines.store import ledger

#: Parquet bytes per read task: few, large elements (a read task emits one reference per shard).
READ_GROUP_BYTES = 64 << 20
#: The DirectRunner's mode for runs above IN_PROCESS_MAX_ROWS (``engine_options["direct_running_mode"]``).
DEFAULT_MODE = "multi_threading"
#: Runs of at most this many planned rows run in-process (multi-process start-up costs more);
#: ``engine_options["in_process_max_rows"]`` overrides it.
IN_PROCESS_MAX_ROWS = 50_000


class ReadAndSplit(beam.DoFn):  # type: ignore[misc]
    """(task, files) -> the task's rows cut by shard, written to scratch; one (shard_id, path) per piece."""

    def __init__(self, spec: JobSpec, attempt_dir: str) -> None:
        self.spec = spec
        self.attempt_dir = attempt_dir

    def process(self, task: tuple[int, list[str]]) -> Iterator[tuple[str, str]]:
        index, paths = task
        yield from read_task(self.spec, self.attempt_dir, index, paths)


class ScoreAndWrite(beam.DoFn):  # type: ignore[misc]
    """(shard_id, [piece paths]) -> validated, scored and stored exactly once; then the pieces go."""

    def __init__(self, spec: JobSpec) -> None:
        self.spec = spec
        self.worker: ShardWorker | None = None
        self.fs: Any = None

    def setup(self) -> None:
        # The ONNX session itself is cached per process in core.model: one per worker process.
        self.worker = ShardWorker(localize_model(self.spec))
        self.worker.open()
        self.fs, _ = scratch.Scratch(self.spec.engine_options["scratch_uri"]).filesystem()

    def process(self, element: tuple[str, list[str]]) -> Iterator[dict[str, Any]]:
        assert self.worker is not None
        shard_id, paths = element
        paths = sorted(paths)  # a stable row order whatever order the shuffle delivered
        outcome = self.worker.process(shard_id, scratch.read_pieces(self.fs, paths))
        # Committed (or found done by an earlier attempt): no attempt needs these pieces again.
        scratch.delete_pieces(self.fs, paths)
        yield outcome

    def teardown(self) -> None:
        if self.worker is not None:
            self.worker.close()


def pipeline_options(spec: JobSpec) -> PipelineOptions:
    """The DirectRunner, threaded (in-process for small runs); ``engine_options['beam_args']`` overrides.

    Threads, not processes: the heavy work (Parquet, Arrow kernels, hashing, onnxruntime, COPY)
    releases the GIL, and one process imports Beam, pyarrow and onnxruntime once instead of once
    per worker (measured at 1M rows: ~40% less CPU, see benchmarks/PROFILE.md).
    ``engine_options['direct_running_mode']`` picks another mode (``multi_processing``).
    """
    args = list(spec.engine_options.get("beam_args", []))
    if not any(a.startswith("--runner") for a in args):
        limit = int(spec.engine_options.get("in_process_max_rows", IN_PROCESS_MAX_ROWS))
        small = sum(s.rows for s in spec.shards) <= limit or spec.workers == 1
        mode = "in_memory" if small else str(spec.engine_options.get("direct_running_mode", DEFAULT_MODE))
        args += ["--runner=DirectRunner", f"--direct_running_mode={mode}"]
        if mode != "in_memory":
            args.append(f"--direct_num_workers={spec.workers}")
        args.append("--default_sdk_harness_log_level=WARNING")
    return PipelineOptions(args)


def execute(spec: JobSpec) -> None:
    """Run the Beam pipeline over the spec's pending shards; returns when every one is stored.

    Scratch left by dead attempts is removed first; this attempt's folder is removed at the end
    (each shard's pieces already went with its commit).
    """
    if not spec.shards:
        return
    spec = ship_beam(spec)  # a remote runner's workers get predcache and the model from the job
    root = scratch.Scratch(spec.engine_options["scratch_uri"])
    scratch.clean_abandoned(
        root, run_id=spec.run_id, attempt=spec.attempt, scoring=ledger.runs_being_scored(spec.database_url)
    )
    attempt_dir = root.attempt_dir(spec.run_id, spec.attempt)
    groups = group_files(
        spec.files, read_task_count(spec.files, workers=spec.workers, group_bytes=READ_GROUP_BYTES)
    )
    read_tasks = [(i, [str(p) for p in group]) for i, group in enumerate(groups)]
    with beam.Pipeline(options=pipeline_options(spec)) as pipeline:
        _ = (
            pipeline
            | "ReadTasks" >> beam.Create(read_tasks)
            | "Spread" >> beam.Reshuffle()
            | "ReadAndSplit" >> beam.ParDo(ReadAndSplit(spec, attempt_dir))
            | "GroupByShard" >> beam.GroupByKey()
            | "ScoreAndWrite" >> beam.ParDo(ScoreAndWrite(spec))
        )
    scratch.delete_attempt(root, spec.run_id, spec.attempt)
