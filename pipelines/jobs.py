"""Run orchestration, engine-agnostic: plan -> score (engine) -> verify -> publish -> observe.

These are the only step functions: ``predcache run``, ``predcache backfill`` (through ``run_job``)
and the DAG's tasks all call them, so every entry point runs the same sequence.

The ledger in PostgreSQL is the source of truth: a run over the same input resumes where
it stopped, a finished one is not scored twice, and progress is read from the shard ledger.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from pipelines.core.card import DEFAULT_SIGNATURE
from pipelines.core.inputs import check_input, fingerprint, key_hashes, list_input_files
from pipelines.core.model import load_model
from pipelines.core.shards import plan_shards
from pipelines.engines.output import engine_output_to
from pipelines.engines.spec import JobSpec
from pipelines.errors import ConfigError, EngineError, InputError, PredcacheError, RunStateError, one_line
from pipelines.settings import Settings
from pipelines.store import ledger
from pipelines.store.cache import cache_url
from pipelines.store.db import connection
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
    drifted: tuple[str, ...] = ()
    alerts: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _engine_execute(engine: str) -> Callable[[JobSpec], None]:
    if engine == "beam":
        from pipelines.engines import beam

        return beam.execute
    if engine == "spark":
        from pipelines.engines import spark  # type: ignore[attr-defined]

        return spark.execute  # type: ignore[no-any-return]
    raise ConfigError(f"unknown engine '{engine}'; choose one of: {', '.join(ENGINES)}")


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


@dataclass(frozen=True)
class PlannedRun:
    """A run that exists in the ledger with its shard plan (new, resumed, or already finished)."""

    run_id: int
    resumed: bool
    finished: bool


def plan_run(settings: Settings, request: RunRequest) -> PlannedRun:
    """Check the input against the model, then find or create the run and its shard plan.

    An unfinished run over the same input (same fingerprint) is resumed; a finished one is
    returned with ``finished=True`` (unless ``request.rerun``); otherwise the input's keys
    are hashed and the shard plan is recorded before any work starts.

    Raises:
        PredcacheError: unknown model, bad card, unreadable or mismatched input.
    """
    url = cache_url(settings)
    model = load_model(
        settings.models_dir,
        request.model,
        request.version,
        signature=request.signature,
        threads=settings.ort_threads,
    )
    files = list_input_files(request.input)
    check_input(files, model.card)
    input_uri = str(request.input.resolve())
    digest = fingerprint(files, request.input)
    shard_rows = request.shard_rows or settings.shard_rows
    # Hash every key before the transaction: it holds locks, and planning is the slow part.
    shards = plan_shards(key_hashes(files, model.card.key), shard_rows)
    with connection(url, autocommit=True) as conn, conn.transaction():
        version_id = ledger.register_version(conn, model)
        if not request.rerun:
            done = ledger.find_run(
                conn, version_id=version_id, input_uri=input_uri, fingerprint=digest, statuses=ledger.FINISHED
            )
            if done is not None:
                return PlannedRun(done.run_id, resumed=False, finished=True)
        ledger.abandon_stale_runs(conn, version_id=version_id, input_uri=input_uri, fingerprint=digest)
        if not request.rerun:
            resumable = ledger.find_run(
                conn,
                version_id=version_id,
                input_uri=input_uri,
                fingerprint=digest,
                statuses=ledger.UNFINISHED,
            )
            if resumable is not None:
                return PlannedRun(resumable.run_id, resumed=True, finished=False)
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
    return PlannedRun(run_id, resumed=False, finished=False)


def score_run(
    settings: Settings,
    run_id: int,
    *,
    engine: str = "beam",
    engine_options: dict[str, Any] | None = None,
    fail_shards: frozenset[str] = frozenset(),
    on_progress: ProgressFn | None = None,
) -> int:
    """Score the run's pending shards on ``engine``; returns how many shards were pending.

    Raises:
        PredcacheError: the engine failed (the run is marked failed; score again to resume).
    """
    execute = _engine_execute(engine)
    url = cache_url(settings)
    with connection(url, autocommit=True) as conn:
        run = ledger.get_run(conn, run_id)
        if run.status in ledger.FINISHED:
            return 0
        if run.status == "abandoned":
            raise RunStateError(f"run {run_id} was abandoned (its input changed); start a new run")
        model = load_model(
            settings.models_dir, run.model, run.version, signature=run.signature, threads=settings.ort_threads
        )
        source = Path(run.input_uri)
        files = list_input_files(source)
        if fingerprint(files, source) != run.input_fingerprint:
            message = f"the input of run {run_id} ({source}) changed after it was planned; start a new run"
            ledger.mark_failed(conn, run_id, message)
            raise InputError(message)
        with conn.transaction():
            attempt = ledger.start_attempt(conn, run_id, engine)
            pending = ledger.planned_shards(conn, run_id, pending_only=True)
        spec = JobSpec(
            database_url=url,
            models_dir=settings.models_dir,
            model=model.name,
            version=model.version,
            signature=model.signature,
            run_id=run_id,
            version_id=run.version_id,
            attempt=attempt,
            key=model.card.key,
            columns=[model.card.key, *[c for c in model.card.input_names if c != model.card.key]],
            files=files,
            shards=pending,
            batch_rows=settings.batch_rows,
            ort_threads=settings.ort_threads,
            workers=settings.workers,
            engine_options={
                "spark_master": settings.spark_master,
                "wave_rows": settings.beam_wave_rows,
                **(engine_options or {}),
            },
            fail_shards=fail_shards,
        )
        log_path = settings.home / "logs" / f"run-{run_id}.log"
        try:
            with _progress_thread(url, run_id, on_progress), engine_output_to(log_path):
                execute(spec)
        except PredcacheError as exc:
            ledger.mark_failed(conn, run_id, str(exc))
            raise
        except Exception as exc:  # engines raise their own wrapped errors
            message = (
                f"run {run_id} failed in the {engine} engine: {one_line(exc)}; "
                f"rerun the same command to resume (engine log: {log_path})"
            )
            ledger.mark_failed(conn, run_id, message)
            raise EngineError(message) from exc
    return len(pending)


def verify_run(settings: Settings, run_id: int) -> ledger.RunRecord:
    """Check the run is whole (see ``ledger.verify_run``) and mark it verified; idempotent."""
    with connection(cache_url(settings), autocommit=True) as conn:
        run = ledger.get_run(conn, run_id)
        if run.status in ledger.FINISHED:
            return run
        with conn.transaction():
            return ledger.verify_run(conn, run_id, max_reject_fraction=settings.max_reject_fraction)


def publish_run(settings: Settings, run_id: int) -> bool:
    """Publish one verified run (and make its version active); False if it already was."""
    with connection(cache_url(settings), autocommit=True) as conn:
        run = ledger.get_run(conn, run_id)
        if run.publish_id is not None:
            return False
        publish(conn, model=run.model, version=run.version, run_ids=[run_id])
    return True


def observe_step(
    settings: Settings, run_id: int, *, thresholds: Any = None, only_if_missing: bool = False
) -> dict[str, Any] | None:
    """Store the run's statistics and drift (``observe_run``), then raise its drift/reject alerts.

    Args:
        settings: The cache and the alert defaults.
        run_id: A scored run.
        thresholds: Per-model alert thresholds (``alerts.Thresholds`` or a dict) over the settings'.
        only_if_missing: Skip runs observed before (a skipped, already finished run).

    Returns:
        ``observe_run``'s result plus ``alerts`` (conditions fired now), or None when skipped.
    """
    from pipelines.monitoring.alerts import check_run
    from pipelines.observe import observe_run

    if only_if_missing:
        with connection(cache_url(settings)) as conn:
            if conn.execute("SELECT 1 FROM run_stats WHERE run_id = %s", (run_id,)).fetchone():
                return None
    observed = observe_run(settings, run_id)
    observed["alerts"] = [alert.condition for alert in check_run(settings, observed, thresholds=thresholds)]
    return observed


def run_job(settings: Settings, request: RunRequest, *, on_progress: ProgressFn | None = None) -> RunSummary:
    """Plan, score, verify, (optionally) publish and observe one input with one model version.

    Raises:
        PredcacheError: any failure, as one line (the run is marked failed and can be resumed).
    """
    started = time.perf_counter()
    if request.engine not in ENGINES:  # fail before any work
        raise ConfigError(f"unknown engine '{request.engine}'; choose one of: {', '.join(ENGINES)}")
    planned = plan_run(settings, request)
    scored = 0
    if not planned.finished:
        scored = score_run(
            settings,
            planned.run_id,
            engine=request.engine,
            engine_options=request.engine_options,
            fail_shards=request.fail_shards,
            on_progress=on_progress,
        )
        verify_run(settings, planned.run_id)
    published = publish_run(settings, planned.run_id) if request.publish else False
    with connection(cache_url(settings)) as conn:
        summary = _summary(
            conn,
            planned.run_id,
            started,
            resumed=planned.resumed,
            skipped=planned.finished,
            published=published or ledger.get_run(conn, planned.run_id).publish_id is not None,
            scored=scored,
        )
    # Observed after the summary's clock stops: the run's throughput is the scoring's.
    observed = observe_step(settings, planned.run_id, only_if_missing=planned.finished)
    if observed is None:
        return summary
    return replace(summary, drifted=tuple(observed["drifted"]), alerts=tuple(observed["alerts"]))


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
