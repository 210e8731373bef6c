"""PySpark adapter: Parquet -> each row's shard (native xxhash64) -> a partition per shard -> score + write.

Arrow end to end: Spark reads the input's key and model columns, computes each key's
shard natively (``xxhash64`` with seed 42 is exactly ``core.keys.key_hash``), and
repartitions by shard, sorted, so a partition streams whole shards to ``mapInArrow``.
There every shard's record batches go to one ``ShardWorker.process`` call: the same
validate + score + exactly-once write as Beam. The model folder reaches executors as a
broadcast, not through a shared filesystem.
"""

from __future__ import annotations

import functools
import re
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from pyspark import TaskContext
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from pipelines.core.keys import NULL_KEY_HASH
from pipelines.core.shards import HASH_MIN, Shard, runs
from pipelines.engines.shipping import (
    files_digest,
    materialize_model,
    missing_module_error,
    model_files,
    ship_spark,
)
from pipelines.engines.spark_session import DEFAULT_MASTER, EXECUTOR_WAIT_SECONDS, get_session
from pipelines.engines.spec import JobSpec
from pipelines.engines.worker import ShardWorker
from pipelines.errors import EngineError

#: The column that carries each row's shard label (see ``partition_labels``) between the stages.
SHARD_COLUMN = "__predcache_shard"
RESULT_SCHEMA = "shard_id string, rows_in long, rows_out long, stored boolean"
RESULT_FIELDS = ("shard_id", "rows_in", "rows_out", "stored")

#: Candidate labels tried per partition when looking for one that hashes into each partition.
LABEL_CANDIDATES = 32
_labels: dict[int, list[int]] = {}


@dataclass(frozen=True)
class Bundle:
    """What executors need, shipped once per run as a broadcast (no shared filesystem assumed)."""

    spec: JobSpec
    #: labels[i] marks the rows of spec.shards[i] (see ``partition_labels``).
    labels: list[int]
    #: The model version's files by name, and a digest of their content.
    files: dict[str, bytes]
    digest: str

    def shard_ids(self) -> dict[int, str]:
        return {label: shard.shard_id for label, shard in zip(self.labels, self.spec.shards, strict=True)}


# --- driver side ----------------------------------------------------------------------------------


def key_hash_column(key: Column) -> Column:
    """Spark's native twin of ``core.keys.key_hash``: XXH64 seed 42, null keys hash to 0.

    Integer keys are hashed as their decimal text, as ``core.keys.key_hash`` and the cache store them.
    """
    return F.when(key.isNull(), F.lit(NULL_KEY_HASH).cast("long")).otherwise(F.xxhash64(key.cast("string")))


def _signed(index: int) -> int:
    return index - (1 << 64) if index >= 1 << 63 else index


def shard_position_column(hashes: Column, shards: list[Shard], labels: list[int] | None = None) -> Column:
    """Position in ``shards`` of each hash, null where no shard covers it (``assign_shards`` in Spark).

    A shard at depth d with index i holds the hashes whose top d bits, counted from
    HASH_MIN, equal i: one map lookup per distinct depth, no range join. With ``labels``,
    the column holds ``labels[position]`` instead of the position.
    """
    if not shards:
        return F.lit(None).cast("int")
    labels = labels if labels is not None else list(range(len(shards)))
    offset = hashes.bitwiseXOR(F.lit(HASH_MIN).cast("long"))  # (hash - HASH_MIN) as 64 unsigned bits
    by_depth: dict[int, list[tuple[int, int]]] = {}
    for shard, label in zip(shards, labels, strict=True):
        by_depth.setdefault(shard.depth, []).append((shard.index, label))
    lookups = []
    for depth, entries in sorted(by_depth.items()):
        # Java shifts mod 64, so depth 0 (the whole space) cannot use a 64-bit shift.
        index = F.lit(0).cast("long") if depth == 0 else F.shiftrightunsigned(offset, 64 - depth)
        pairs = [F.lit(x) for i, p in entries for x in (_signed(i), p)]
        mapping = F.create_map(*pairs).cast("map<bigint,int>")
        lookups.append(F.try_element_at(mapping, index))
    return F.coalesce(*lookups) if len(lookups) > 1 else lookups[0]


def partition_labels(session: SparkSession, partitions: int) -> list[int]:
    """For each partition p, an int that Spark's hash partitioning into ``partitions`` sends to p.

    ``repartition(n, col)`` places a row by ``pmod(hash(col), n)``; labelling shard p with
    such an int gives every shard a partition of its own (plain positions would collide
    and leave partitions empty). Found with Spark's own ``hash`` over a range of candidates,
    once per partition count and process.
    """
    labels = _labels.get(partitions)
    if labels is None:
        candidates = session.range(partitions * LABEL_CANDIDATES).select(
            F.pmod(F.hash(F.col("id").cast("int")), F.lit(partitions)).alias("p")
        )
        targets = candidates.toArrow().column("p").to_numpy()
        found, first = np.unique(targets, return_index=True)
        by_target = dict(zip(found.tolist(), first.tolist(), strict=True))
        # A partition without a candidate is astronomically unlikely and would only cost balance.
        labels = [by_target.get(p, partitions * LABEL_CANDIDATES + p) for p in range(partitions)]
        _labels[partitions] = labels
    return labels


def shards_frame(session: SparkSession, spec: JobSpec, labels: list[int]) -> DataFrame:
    """The input's rows of pending shards labelled by shard, each shard alone in a partition, sorted."""
    # The spec lists every file; recursiveFileLookup turns off Spark's partition-column inference
    # from folder names (date=...), which core's reader does not do either.
    reader = session.read.option("recursiveFileLookup", "true")
    frame = reader.parquet(*[str(p) for p in spec.files]).select(*[F.col(f"`{c}`") for c in spec.columns])
    key = F.col(f"`{spec.key}`")
    label = shard_position_column(key_hash_column(key), spec.shards, labels)
    return (
        # Null and empty keys were rejected while planning (core.inputs.scan_keys).
        frame.where(key.isNotNull() & (F.length(key) > 0))
        .withColumn(SHARD_COLUMN, label)
        .where(F.col(SHARD_COLUMN).isNotNull())
        .repartition(len(spec.shards), SHARD_COLUMN)
        .sortWithinPartitions(SHARD_COLUMN)
    )


_PREDCACHE_ERROR = re.compile(r"pipelines\.errors\.\w+: (.+)")
#: "SomeError: message" lines of a Python traceback (JVM classes and stack frames are not telling).
_PYTHON_ERROR = re.compile(r"^(?!(?:org|java|scala|py4j)\.)[\w.]*(?:Error|Exception): .+$")


def task_error(text: str) -> str:
    """The one line worth showing of a failed Spark job's message.

    The predcache error a task died of, else the last Python exception line, else the first line.
    """
    found = _PREDCACHE_ERROR.findall(text)
    if found:
        return str(found[-1]).strip()[:500]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    python = [line for line in lines if _PYTHON_ERROR.match(line)]
    return (python[-1] if python else lines[0] if lines else "unknown Spark failure")[:500]


def job_group(spec: JobSpec) -> str:
    """The Spark job group of a run's attempt (cancel it, or read its task failures, by this id)."""
    return f"predcache-run-{spec.run_id}-attempt-{spec.attempt}"


def spark_session(
    master: str = DEFAULT_MASTER,
    *,
    threads: int = 1,
    conf: dict[str, str] | None = None,
    executor_wait: float = EXECUTOR_WAIT_SECONDS,
) -> SparkSession:
    """The shared session an engine run on ``master`` uses; ``threads`` = CPUs (and ONNX threads) per task."""
    return get_session(master, {"spark.task.cpus": str(threads), **(conf or {})}, executor_wait=executor_wait)


def execute(spec: JobSpec) -> None:
    """Score the spec's pending shards on Spark; returns when every shard task has finished.

    ``spec.engine_options``: ``spark_master`` (default ``local[*]``; ``local[N,F]`` retries
    a failed task F-1 times), ``spark_conf`` (extra Spark settings), ``spark_executor_wait_s``
    (bound on waiting for a cluster's first executor), ``fail_first_attempt_shards`` (test
    hook: the first attempt of those shards' tasks fails right after the shard committed).

    Raises:
        EngineError: Spark is unavailable, or a shard task failed more often than Spark retries.
    """
    if not spec.shards:
        return
    options = spec.engine_options
    with warnings.catch_warnings():
        # pyspark probes pandas on the driver and warns that pandas 3 is untested; Arrow paths skip pandas.
        warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas")
        master = str(options.get("spark_master") or DEFAULT_MASTER)
        session = spark_session(
            master,
            threads=spec.ort_threads,
            conf=dict(options.get("spark_conf", {})),
            executor_wait=float(options.get("spark_executor_wait_s", EXECUTOR_WAIT_SECONDS)),
        )
        context = session.sparkContext
        ship_spark(context, master, spec)  # a cluster's executors get predcache from the job itself
        context.setJobGroup(job_group(spec), f"predcache run {spec.run_id}: {spec.model}/{spec.version}")
        files = model_files(spec)
        labels = partition_labels(session, len(spec.shards))
        bundle = context.broadcast(Bundle(spec=spec, labels=labels, files=files, digest=files_digest(files)))
        try:
            scoring = functools.partial(score_partition, bundle)
            results = shards_frame(session, spec, labels).mapInArrow(scoring, RESULT_SCHEMA).collect()
        except Exception as exc:  # py4j / PySpark wrap task failures in their own exception types
            where = f"the Spark workers' Python ({context.pythonExec})"
            missing = missing_module_error(str(exc), where=where)
            raise EngineError(
                f"run {spec.run_id} failed in the spark engine: "
                + (missing or f"{task_error(str(exc))}; rerun the same command to resume")
            ) from exc
        finally:
            bundle.destroy()
    seen = [row.shard_id for row in results]
    if len(seen) != len(set(seen)):
        raise EngineError(f"run {spec.run_id}: a shard reached two tasks; this is a predcache bug, report it")


# --- executor side --------------------------------------------------------------------------------

#: This Python worker's shard workers, by (database, run, attempt): one per process, reused by tasks.
_workers: dict[tuple[str, int, int], ShardWorker] = {}


def _worker(bundle: Bundle, threads: int) -> ShardWorker:
    spec = bundle.spec
    key = (spec.database_url, spec.run_id, spec.attempt)
    worker = _workers.get(key)
    if worker is None:
        for old in _workers.values():
            old.close()
        _workers.clear()
        root = Path(tempfile.gettempdir()) / "predcache-spark-models"
        root.mkdir(parents=True, exist_ok=True)
        local = materialize_model(bundle.files, bundle.digest, spec.model, spec.version, root)
        # Intra-op threads = the CPUs Spark gave this task (spark.task.cpus): no oversubscription.
        worker = ShardWorker(replace(spec, models_dir=local, ort_threads=threads))
        worker.open()
        _workers[key] = worker
    return worker


def score_partition(broadcast: Any, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """mapInArrow body: batches sorted by shard -> one ``ShardWorker.process`` per shard -> counts.

    After ``sortWithinPartitions`` a shard's rows arrive consecutively, so a shard is
    complete when the next one starts (or the partition ends); only one shard is held.
    """
    bundle: Bundle = broadcast.value
    shard_ids = bundle.shard_ids()
    fail_first = set(bundle.spec.engine_options.get("fail_first_attempt_shards", ()))
    context = TaskContext.get()
    current: int | None = None
    pieces: list[pa.Table] = []

    def flush(label: int) -> pa.RecordBatch:
        shard_id = shard_ids[label]
        worker = _worker(bundle, context.cpus() if context is not None else bundle.spec.ort_threads)
        done = worker.process(shard_id, pieces)
        if shard_id in fail_first and context is not None and context.attemptNumber() == 0:
            raise EngineError(f"injected fault in the first attempt of shard {shard_id}, after it committed")
        return pa.RecordBatch.from_pylist([{name: done[name] for name in RESULT_FIELDS}])

    for batch in batches:
        if batch.num_rows == 0:
            continue
        table = pa.Table.from_batches([batch])
        labels = table.column(SHARD_COLUMN).to_numpy()
        table = table.drop_columns([SHARD_COLUMN])
        for label, start, stop in runs(labels):
            if label != current:
                if current is not None:
                    yield flush(current)
                current, pieces = label, []
            pieces.append(table.slice(start, stop - start))
    if current is not None:
        yield flush(current)
