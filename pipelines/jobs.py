"""Run orchestration, engine-agnostic: plan -> score (engine) -> verify -> publish.

The ledger in PostgreSQL is the source of truth: a run over the same input resumes where
it stopped, a finished one is not scored twice, and progress is read from the shard ledger.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from pipelines.core.card import DEFAULT_SIGNATURE
from pipelines.core.inputs import check_input, fingerprint, key_hashes, list_input_files
from pipelines.core.model import load_model
from pipelines.core.shards import plan_shards
from pipelines.engines.spec import JobSpec
from pipelines.errors import ConfigError, EngineError, PredcacheError
from pipelines.settings import Settings
from pipelines.store import ledger
from pipelines.store.db import connection, migrate, resolve_url
from pipelines.store.publish import publish

ENGINES = ("beam", "spark")
PROGRESS_POLL_SECONDS = 0.5

#: on_progress(shards_done, shards_total, rows_done, rows_total)
ProgressFn = Callable[[int, int, int, int], None]


@dataclass(frozen=True)
class RunRequest:
    """One scoring run as asked for by a user (CLI flags, DAG params)."""

    model: str
    input: Path
    engine: str = "beam"
    version: str | None = None
    signature: str = DEFAULT_SIGNATURE
    shard_rows: int | None = None
    publish: bool = False
    rerun: bool = False
    engine_options: dict[str, Any] = field(default_factory=dict)
    fail_shards: frozenset[str] = frozenset()


@dataclass(frozen=True)
class RunSummary:
    """What a run did; ``--json`` prints this."""

    run_id: int
    model: str
    version: str
    engine: str
    status: str
    input: str
    rows_in: int
    rows_out: int
    rows_rejected: int
    shards_total: int
    shards_scored: int
    seconds: float
    rows_per_s: float
    resumed: bool
    skipped: bool
    published: bool

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def database_url(settings: Settings) -> str:
    """The cache's URL (starting the embedded server if needed), with the schema applied."""
    url = resolve_url(settings.database_url, settings.embedded_pgdata)
    migrate(url)
    return url


def _engine_execute(engine: str) -> Callable[[JobSpec], None]:
    if engine == "beam":
        from pipelines.engines import beam

        return beam.execute
    if engine == "spark":
        from pipelines.engines import spark  # type: ignore[attr-defined]

        return spark.execute  # type: ignore[no-any-return]
    raise ConfigError(f"unknown engine '{engine}'; choose one of: {', '.join(ENGINES)}")


def _one_line(exc: BaseException) -> str:
    """The most telling line of an engine failure (engines wrap worker errors in tracebacks)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in reversed(lines):
        if "Error:" in line or "Exception:" in line:
            return line[:500]
    return (lines[-1] if lines else type(exc).__name__)[:500]


@contextmanager
def _progress_thread(url: str, run_id: int, on_progress: ProgressFn | None) -> Iterator[None]:
    if on_progress is None:
        yield
        return
    stop = threading.Event()

    def poll() -> None:
        with connection(url, autocommit=True) as conn:
            while True:
                p = ledger.progress(conn, run_id)
                on_progress(p.shards_done, p.shards_total, p.rows_done, p.rows_planned)
                if stop.wait(PROGRESS_POLL_SECONDS):
                    break
            p = ledger.progress(conn, run_id)
            on_progress(p.shards_done, p.shards_total, p.rows_done, p.rows_planned)

    thread = threading.Thread(target=poll, name="predcache-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=10)


def run_job(settings: Settings, request: RunRequest, *, on_progress: ProgressFn | None = None) -> RunSummary:
    """Plan, score, verify and (optionally) publish one input with one model version.

    A run over an input that an unfinished run already planned resumes that run (only its
    pending shards are scored); a finished run over the same input is returned as is,
    unless ``request.rerun``.

    Raises:
        PredcacheError: any failure, as one line (the run is marked failed and can be resumed).
    """
    started = time.perf_counter()
    execute = _engine_execute(request.engine)
    url = database_url(settings)
    model = load_model(
        settings.models_dir, request.model, request.version, signature=request.signature, threads=settings.ort_threads
    )
    files = list_input_files(request.input)
    check_input(files, model.card)
    input_uri = str(request.input.resolve())
    digest = fingerprint(files, request.input)
    shard_rows = request.shard_rows or settings.shard_rows

    with connection(url, autocommit=True) as conn:
        with conn.transaction():
            version_id = ledger.register_version(conn, model)
        if not request.rerun:
            done = ledger.find_run(
                conn, version_id=version_id, input_uri=input_uri, fingerprint=digest, statuses=ledger.FINISHED
            )
            if done is not None:
                published = done.publish_id is not None
                if request.publish and not published:
                    publish(conn, model=model.name, version=model.version, run_ids=[done.run_id])
                    published = True
                return _summary(conn, done.run_id, started, resumed=False, skipped=True, published=published, scored=0)
        with conn.transaction():
            ledger.abandon_stale_runs(conn, version_id=version_id, input_uri=input_uri, fingerprint=digest)
            resumable = ledger.find_run(
                conn, version_id=version_id, input_uri=input_uri, fingerprint=digest, statuses=ledger.UNFINISHED
            )
            if resumable is not None and not request.rerun:
                run_id, resumed = resumable.run_id, True
            else:
                shards = plan_shards(key_hashes(files, model.card.key), shard_rows)
                run_id = ledger.create_run(
                    conn,
                    version_id=version_id,
                    model=model,
                    engine=request.engine,
                    input_uri=input_uri,
                    fingerprint=digest,
                    shard_rows=shard_rows,
                    shards=shards,
                )
                resumed = False
            attempt = ledger.start_attempt(conn, run_id, request.engine)
            pending = ledger.planned_shards(conn, run_id, pending_only=True)
        spec = JobSpec(
            database_url=url,
            models_dir=settings.models_dir,
            model=model.name,
            version=model.version,
            signature=request.signature,
            run_id=run_id,
            version_id=version_id,
            attempt=attempt,
            key=model.card.key,
            columns=[model.card.key, *[c for c in model.card.input_names if c != model.card.key]],
            files=files,
            shards=pending,
            batch_rows=settings.batch_rows,
            ort_threads=settings.ort_threads,
            workers=settings.workers,
            engine_options={"spark_master": settings.spark_master, **request.engine_options},
            fail_shards=request.fail_shards,
        )
        try:
            with _progress_thread(url, run_id, on_progress):
                execute(spec)
        except PredcacheError as exc:
            ledger.mark_failed(conn, run_id, str(exc))
            raise
        except Exception as exc:  # engines raise their own wrapped errors
            message = f"run {run_id} failed in the {request.engine} engine: {_one_line(exc)}; rerun the same command to resume"
            ledger.mark_failed(conn, run_id, message)
            raise EngineError(message) from exc
        with conn.transaction():
            ledger.verify_run(conn, run_id, max_reject_fraction=settings.max_reject_fraction)
        if request.publish:
            publish(conn, model=model.name, version=model.version, run_ids=[run_id])
        return _summary(
            conn, run_id, started, resumed=resumed, skipped=False, published=request.publish, scored=len(pending)
        )


def _summary(
    conn: Any, run_id: int, started: float, *, resumed: bool, skipped: bool, published: bool, scored: int
) -> RunSummary:
    run = ledger.get_run(conn, run_id)
    p = ledger.progress(conn, run_id)
    seconds = time.perf_counter() - started
    rows_in = run.rows_in or 0
    return RunSummary(
        run_id=run.run_id,
        model=run.model,
        version=run.version,
        engine=run.engine,
        status=run.status,
        input=run.input_uri,
        rows_in=rows_in,
        rows_out=run.rows_out or 0,
        rows_rejected=run.rows_rejected or 0,
        shards_total=p.shards_total,
        shards_scored=scored,
        seconds=round(seconds, 3),
        rows_per_s=round(rows_in / seconds, 1) if seconds > 0 and not skipped else 0.0,
        resumed=resumed,
        skipped=skipped,
        published=published,
    )


def days(start: date, end: date) -> list[date]:
    """Every day from ``start`` to ``end``, both included.

    Raises:
        ConfigError: ``end`` is before ``start``.
    """
    if end < start:
        raise ConfigError(f"--end {end} is before --start {start}")
    return [start + timedelta(days=i) for i in range((end - start).days + 1)]


def day_input(template: str, day: date) -> Path:
    """The input path of one day: ``template`` with ``{date}`` replaced by YYYY-MM-DD.

    Raises:
        ConfigError: the template has no ``{date}`` placeholder.
    """
    if "{date}" not in template:
        raise ConfigError(f"--input-template '{template}' has no {{date}} placeholder (e.g. 'data/date={{date}}')")
    return Path(template.replace("{date}", day.isoformat()))


def backfill_job(
    settings: Settings,
    *,
    model: str,
    template: str,
    start: date,
    end: date,
    engine: str = "beam",
    version: str | None = None,
    publish_runs: bool = False,
    shard_rows: int | None = None,
    on_day: Callable[[date, RunSummary], None] | None = None,
) -> list[RunSummary]:
    """Score each day from ``start`` to ``end`` in order; days already done are skipped.

    A failure stops the backfill with the failing day's error; running it again resumes
    from that day (finished days are skipped, the failed day's run resumes its shards).
    """
    inputs = [(day, day_input(template, day)) for day in days(start, end)]
    summaries = []
    for day, path in inputs:
        request = RunRequest(
            model=model, input=path, engine=engine, version=version, shard_rows=shard_rows, publish=publish_runs
        )
        summary = run_job(settings, request)
        summaries.append(summary)
        if on_day is not None:
            on_day(day, summary)
    return summaries
