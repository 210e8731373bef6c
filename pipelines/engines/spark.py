"""PySpark adapter: Spark schedules Python tasks; the rows never pass through the JVM.

Two Spark jobs over small elements, the same two stages as the Beam engine:

1. **read**: one task per group of input files reads its row groups with pyarrow, cuts them by
   shard (``split_by_shard``) and writes each piece once to the run's scratch as Arrow IPC
   (``engines.scratch``); it returns only ``(shard_id, path)`` pairs.
2. **score**: the driver groups the paths by shard; each task takes a few shards, memory-maps
   their pieces and runs ``ShardWorker.process`` on each (the same validate + score + exactly-once
   write as Beam), then deletes the pieces.

Why not Spark's own Parquet reader and shuffle: they turn every value into a JVM row and back into
Arrow for Python (read, hash, shuffle write, shuffle read, sort, Arrow batches): at 1M rows that
path cost more than scoring and writing together (benchmarks/PROFILE.md, "Spark").

The model folder reaches executors as a broadcast; the input files and the scratch root must be
paths every executor can read (a local master, or shared storage / ``PREDCACHE_SCRATCH_URI``).
"""

from __future__ import annotations

import functools
import os
import re
import tempfile
import threading
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pyspark import SparkContext, TaskContext
from pyspark.sql import SparkSession

from pipelines.core.inputs import group_files, read_task_count
from pipelines.engines import scratch
from pipelines.engines.read_stage import read_task
from pipelines.engines.shipping import (
    files_digest,
    materialize_model,
    missing_module_error,
    model_files,
    ship_spark,
)
from pipelines.engines.spark_session import DEFAULT_MASTER, EXECUTOR_WAIT_SECONDS, get_session, jvm_log
from pipelines.engines.spec import JobSpec
from pipelines.engines.worker import ShardWorker
from pipelines.errors import EngineError
from pipelines.store import ledger
from pipelines.store.db import connection

#: Parquet bytes per read task: few, large tasks (each writes one piece per shard per flush).
READ_GROUP_BYTES = 64 << 20
#: Score tasks per task slot: enough to balance uneven shards, few enough that per-task cost
#: (a Python round trip to the JVM) stays small against a shard's work.
SCORE_TASKS_PER_SLOT = 4


@dataclass(frozen=True)
class Bundle:
    """What executors need, shipped once per run as a broadcast (no shared model folder assumed)."""

    spec: JobSpec
    attempt_dir: str
    #: The model version's files by name, and a digest of their content.
    files: dict[str, bytes]
    digest: str


# --- driver side ----------------------------------------------------------------------------------

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
    log_path: Path | None = None,
) -> SparkSession:
    """The shared session an engine run on ``master`` uses; ``threads`` = CPUs (and ONNX threads) per task."""
    conf = {"spark.task.cpus": str(threads), **(conf or {})}
    return get_session(master, conf, executor_wait=executor_wait, log_path=log_path)


_early: threading.Thread | None = None


def start_early(options: dict[str, Any], *, threads: int, log_path: Path) -> None:
    """Start the session of a local master, and its Python workers, in the background.

    ``run_job`` calls this before it plans the run: the JVM and the workers' imports (seconds of
    CPU, mostly single-threaded) then overlap the planner's pass over the keys. ``execute`` waits
    for it; if the start failed, ``execute`` starts the session again and reports the error.
    Cluster masters are left to ``execute`` (a failed start there waits for minutes, not seconds).
    The JVM writes to ``log_path``, since no run log exists yet.
    """
    global _early
    master = str(options.get("spark_master") or DEFAULT_MASTER)
    if not master.startswith("local") or (_early is not None and _early.is_alive()):
        return
    conf = dict(options.get("spark_conf", {}))

    def start() -> None:
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas")
                context = spark_session(master, threads=threads, conf=conf, log_path=log_path).sparkContext
                slots = max(1, context.defaultParallelism // max(1, threads))
                context.parallelize(range(slots), slots).mapPartitions(_warm_worker).collect()
        except Exception:  # execute() starts the session again and reports the error in one line
            pass

    _early = threading.Thread(target=start, name="predcache-spark-start", daemon=True)
    _early.start()


def _wait_for_early_start() -> None:
    if _early is not None:
        _early.join()


def shard_pieces(pieces: Iterable[tuple[str, str]], spec: JobSpec) -> list[tuple[str, list[str]]]:
    """Each planned shard that has rows, in plan order, with its piece paths sorted.

    Paths are sorted so a shard's rows reach the scorer in one stable order, whatever order the
    read tasks finished in (Beam sorts the same paths the same way).
    """
    by_shard: dict[str, list[str]] = {}
    for shard_id, path in pieces:
        by_shard.setdefault(shard_id, []).append(path)
    return [(s.shard_id, sorted(by_shard[s.shard_id])) for s in spec.shards if s.shard_id in by_shard]


def _run_stages(context: SparkContext, spec: JobSpec, root: scratch.Scratch) -> list[dict[str, Any]]:
    slots = max(1, context.defaultParallelism // max(1, spec.ort_threads))
    groups = group_files(spec.files, read_task_count(spec.files, workers=slots, group_bytes=READ_GROUP_BYTES))
    read_tasks = [(i, [str(p) for p in group]) for i, group in enumerate(groups)]
    files = model_files(spec)
    attempt_dir = root.attempt_dir(spec.run_id, spec.attempt)
    bundle = context.broadcast(
        Bundle(spec=spec, attempt_dir=attempt_dir, files=files, digest=files_digest(files))
    )
    try:
        reading = functools.partial(read_partition, bundle)
        pieces = context.parallelize(read_tasks, len(read_tasks)).mapPartitions(reading).collect()
        shards = shard_pieces(pieces, spec)
        tasks = max(1, min(len(shards), slots * SCORE_TASKS_PER_SLOT))
        scoring = functools.partial(score_partition, bundle)
        # parallelize slices consecutively: a task scores neighbouring shards of similar size.
        return list(context.parallelize(shards, tasks).mapPartitions(scoring).collect())
    finally:
        bundle.destroy()


def _announce(context: SparkContext, spec: JobSpec) -> None:
    """One line in the run's engine log naming the Spark application and driver JVM that ran it.

    Written to fd 2 (the run log while the engine runs), so a backfill's runs show whether they
    shared one session, and where that JVM writes when it has a log of its own.
    """
    jvm_pid = context._jvm.java.lang.ProcessHandle.current().pid()  # type: ignore[union-attr]
    line = f"predcache run {spec.run_id}: spark application {context.applicationId}, driver JVM pid {jvm_pid}"
    log = jvm_log()
    os.write(2, (line + (f"; Spark's own log: {log}" if log else "") + "\n").encode())


def execute(spec: JobSpec) -> None:
    """Score the spec's pending shards on Spark; returns when every shard is stored.

    ``spec.engine_options``: ``spark_master`` (default ``local[*]``; ``local[N,F]`` retries
    a failed task F-1 times), ``spark_conf`` (extra Spark settings), ``spark_executor_wait_s``
    (bound on waiting for a cluster's first executor), ``scratch_uri`` (where pieces go between
    the stages), ``fail_first_attempt_shards`` (test hook: the first attempt of those shards'
    tasks fails right after the shard committed).

    Scratch left by dead attempts is removed first; this attempt's folder is removed at the end.

    Raises:
        EngineError: Spark is unavailable, or a task failed more often than Spark retries.
    """
    if not spec.shards:
        return
    _wait_for_early_start()
    options = spec.engine_options
    root = scratch.Scratch(str(options["scratch_uri"]))
    scratch.clean_abandoned(
        root, run_id=spec.run_id, attempt=spec.attempt, scoring=ledger.runs_being_scored(spec.database_url)
    )
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
        _announce(context, spec)
        ship_spark(context, master, spec)  # a cluster's executors get predcache from the job itself
        context.setJobGroup(job_group(spec), f"predcache run {spec.run_id}: {spec.model}/{spec.version}")
        try:
            results = _run_stages(context, spec, root)
        except Exception as exc:  # py4j / PySpark wrap task failures in their own exception types
            where = f"the Spark workers' Python ({context.pythonExec})"
            missing = missing_module_error(str(exc), where=where)
            raise EngineError(
                f"run {spec.run_id} failed in the spark engine: "
                + (missing or f"{task_error(str(exc))}; rerun the same command to resume")
            ) from exc
    seen = [row["shard_id"] for row in results]
    if len(seen) != len(set(seen)):
        raise EngineError(f"run {spec.run_id}: a shard reached two tasks; this is a predcache bug, report it")
    scratch.delete_attempt(root, spec.run_id, spec.attempt)


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


def _warm_worker(items: Iterable[int]) -> Iterator[int]:
    """A task whose only effect is a started Python worker that imported this module (and so the scorer)."""
    yield sum(1 for _ in items)


def read_partition(broadcast: Any, tasks: Iterator[tuple[int, list[str]]]) -> Iterator[tuple[str, str]]:
    """Read stage: each (task, files) -> its rows cut by shard and written to scratch -> (shard_id, path)s.

    A retried task writes the same paths with the same rows (the input is fixed by its fingerprint).
    """
    bundle: Bundle = broadcast.value
    for index, paths in tasks:
        yield from read_task(bundle.spec, bundle.attempt_dir, index, paths)


def _shard_done(spec: JobSpec, shard_id: str) -> bool:
    with connection(spec.database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT status = 'done' FROM run_shards WHERE run_id = %s AND shard_id = %s",
            (spec.run_id, shard_id),
        ).fetchone()
    return bool(row and row[0])


def score_partition(broadcast: Any, shards: Iterator[tuple[str, list[str]]]) -> Iterator[dict[str, Any]]:
    """Score stage: each (shard_id, piece paths) -> validated, scored and stored exactly once; pieces go.

    A shard's pieces are deleted once it committed, so a retried task finds a committed shard's
    pieces gone: it checks the ledger and moves on (pieces gone from a shard not done mean the
    scratch was cleaned under a live attempt, which fails the task).
    """
    bundle: Bundle = broadcast.value
    spec = bundle.spec
    fail_first = set(spec.engine_options.get("fail_first_attempt_shards", ()))
    context = TaskContext.get()
    fs, _ = scratch.Scratch(str(spec.engine_options["scratch_uri"])).filesystem()
    for shard_id, paths in shards:
        try:
            tables = scratch.read_pieces(fs, paths)
        except FileNotFoundError:
            if not _shard_done(spec, shard_id):
                raise EngineError(
                    f"the scratch pieces of shard {shard_id} are gone before it was stored; rerun to resume"
                ) from None
            yield {"shard_id": shard_id, "stored": False, "rows_in": 0, "rows_out": 0}
            continue
        worker = _worker(bundle, context.cpus() if context is not None else spec.ort_threads)
        done = worker.process(shard_id, tables)
        del tables  # unmap before the files go
        scratch.delete_pieces(fs, paths)
        if shard_id in fail_first and context is not None and context.attemptNumber() == 0:
            raise EngineError(f"injected fault in the first attempt of shard {shard_id}, after it committed")
        yield done
