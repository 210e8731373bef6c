"""Run orchestration, engine-agnostic: plan -> score (engine) -> verify -> publish -> observe.

These are the only step functions: ``predcache run``, ``predcache backfill`` (through ``run_job``)
and the DAG's tasks all call them, so every entry point runs the same sequence.

The ledger in PostgreSQL is the source of truth: a run over the same input resumes where
it stopped, a finished one is not scored twice, and progress is read from the shard ledger.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from pipelines import refresh
from pipelines.core.card import DEFAULT_SIGNATURE
from pipelines.core.inputs import check_input, fingerprint, iter_tables, list_input_files, scan_keys
from pipelines.core.model import Model, load_model
from pipelines.core.shards import plan_shards
from pipelines.engines.output import engine_output_to
from pipelines.engines.spec import JobSpec
from pipelines.errors import (
    ConfigError,
    EngineError,
    InputError,
    ModelCardError,
    PredcacheError,
    RunStateError,
    one_line,
)
from pipelines.faults import fault_point
from pipelines.settings import Settings
from pipelines.store import ledger, runstate
from pipelines.store.cache import cache_url
from pipelines.store.db import connection
from pipelines.store.incremental import (
    check_same_schema,
    input_schema_text,
    record_plan,
    write_tombstones,
)
from pipelines.store.publish import publish

log = logging.getLogger(__name__)

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
    #: Rescore only new keys and keys whose input fingerprint changed (pipelines.core.fingerprint).
    incremental: bool = False
    #: With incremental: hide current keys that the input no longer contains.
    prune_missing: bool = False


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
    rows_unchanged: int = 0
    rows_pruned: int = 0
    drifted: tuple[str, ...] = ()
    alerts: tuple[str, ...] = ()
    #: Wall seconds of each step this command ran (plan, score, verify, publish, observe): where
    #: the time went, next to ``seconds`` (plan to publish).
    step_seconds: dict[str, float] = field(default_factory=dict)

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


#: Modules the Beam engine needs that take a second to import: imported while the run is planned.
BEAM_MODULES = (
    "pipelines.engines.beam",
    "apache_beam.runners.direct.direct_runner",
    "apache_beam.runners.portability.fn_api_runner.fn_runner",
)


def _import_quietly(names: tuple[str, ...]) -> None:
    for name in names:
        try:
            importlib.import_module(name)
        except Exception:  # the engine imports them again and reports what is missing
            return


def _start_engine_early(settings: Settings, request: RunRequest) -> None:
    """Start the engine while the run is planned: Spark's session (``engines.spark.start_early``),
    Beam's imports (the model's session is already loaded by the planner, in this process)."""
    if request.engine == "beam":
        threading.Thread(
            target=_import_quietly, args=(BEAM_MODULES,), name="predcache-beam-import", daemon=True
        ).start()
        return
    if request.engine != "spark":
        return
    from pipelines.engines import spark  # type: ignore[attr-defined]

    options = {"spark_master": settings.spark_master, **request.engine_options}
    log_path = settings.home / "logs" / f"spark-driver-{os.getpid()}.log"
    spark.start_early(options, threads=settings.ort_threads, log_path=log_path)


@contextmanager
def _progress_thread(url: str, run_id: int, on_progress: ProgressFn | None) -> Iterator[None]:
    if on_progress is None:
        yield
        return
    stop = threading.Event()

    def report() -> None:
        # A fresh connection per poll: the database may restart during a run (the bar just pauses).
        try:
            with connection(url, autocommit=True) as conn:
                p = ledger.progress(conn, run_id)
            on_progress(p.shards_done, p.shards_total, p.rows_done, p.rows_planned)
        except Exception as exc:  # progress is cosmetic; the run reports real failures
            log.debug("run %s: progress poll failed (%s)", run_id, one_line(exc))

    def poll() -> None:
        while True:
            report()
            if stop.wait(PROGRESS_POLL_SECONDS):
                break
        report()

    with _in_background(poll, "predcache-progress", stop):
        yield


@dataclass(frozen=True)
class PlannedRun:
    """A run that exists in the ledger with its shard plan (new, resumed, or already finished)."""

    run_id: int
    resumed: bool
    finished: bool
    #: A new incremental run's carried-over pairs (stored while it scores; see ``score_run``).
    carried: np.ndarray | None = None


def plan_run(
    settings: Settings, request: RunRequest, *, before_work: Callable[[], None] | None = None
) -> PlannedRun:
    """Check the input against the model, then find or create the run and its shard plan.

    An unfinished run over the same input (same fingerprint) is resumed; a finished one is
    returned with ``finished=True`` (unless ``request.rerun``); otherwise the input's keys
    are hashed and the shard plan is recorded before any work starts. Both are looked up
    before the slow part of planning (an incremental run's comparison), which a finished or
    resumed run does not need; ``before_work`` is called once the run is known to score
    (``run_job`` starts the engine there, to overlap the planning).

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
    check_input(files, model.card, max_row_group_rows=settings.max_row_group_rows)
    if request.prune_missing and not request.incremental:
        raise ConfigError("--prune-missing needs --incremental (a full run already replaces every key)")
    input_uri = str(request.input.resolve())
    digest = fingerprint(files, request.input)
    schema_text = input_schema_text(pq.read_schema(files[0]), [model.card.key, *model.card.input_names])
    shard_rows = request.shard_rows or settings.shard_rows
    existing = None if request.rerun else _existing_run(url, model, input_uri, digest)
    if existing is not None and existing.finished:
        return existing
    if before_work is not None:
        before_work()
    if existing is not None:
        return existing
    changes = (
        _plan_refresh(url, settings, model, request, schema_text, files) if request.incremental else None
    )
    try:
        return _plan_in_cache(
            url,
            model,
            request,
            files,
            input_uri,
            digest,
            schema_text,
            shard_rows,
            settings,
            changes,
        )
    finally:
        if changes is not None:
            refresh.discard(changes)  # planned but not adopted by a new run


def _existing_run(url: str, model: Model, input_uri: str, digest: str) -> PlannedRun | None:
    """A finished, or else an unfinished, run of this version over this exact input (no locks:
    ``_plan_in_cache`` decides again under its lock when this finds none)."""
    with connection(url, autocommit=True) as conn:
        registered = ledger.registered_version(conn, model)  # refuses a rebuilt version
        if registered is None:
            return None
        for statuses, finished in ((ledger.FINISHED, True), (ledger.UNFINISHED, False)):
            run = ledger.find_run(
                conn, version_id=registered, input_uri=input_uri, fingerprint=digest, statuses=statuses
            )
            if run is not None:
                return PlannedRun(run.run_id, resumed=not finished, finished=finished)
    return None


def _plan_refresh(
    url: str, settings: Settings, model: Model, request: RunRequest, schema_text: str, files: list[Path]
) -> refresh.RefreshPlan:
    """An incremental run's comparison (the slow part, before the planning transaction)."""
    with connection(url, autocommit=True) as conn:
        registered = refresh.version_id(conn, model)
        if registered is not None:
            check_same_schema(conn, version_id=registered, schema_text=schema_text)
        return refresh.plan_refresh(conn, settings, model, files, prune_missing=request.prune_missing)


def _plan_in_cache(
    url: str,
    model: Model,
    request: RunRequest,
    files: list[Path],
    input_uri: str,
    digest: str,
    schema_text: str,
    shard_rows: int,
    settings: Settings,
    changes: refresh.RefreshPlan | None,
) -> PlannedRun:
    # Hash every key before the transaction: it holds locks, and planning is the slow part.
    # Null and empty keys are rejected here: they share one hash and would make one shard
    # that no split can divide. An incremental run plans only the rows it forwards.
    scan = scan_keys([changes.file] if changes is not None else files, model.card)
    if request.shard_rows is None and "shard_rows" not in settings.model_fields_set:
        # The default size grows past max_shards shards (an explicit one is kept). Shards halve
        # the hash space: a quarter's headroom keeps them at most max_shards.
        shard_rows = max(shard_rows, -(-len(scan.hashes) * 5 // (4 * settings.max_shards)))
    shards = plan_shards(scan.hashes, shard_rows, in_place=True)
    with connection(url, autocommit=True) as conn, conn.transaction():
        # One planner per input at a time: two commands started together find one run.
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('predcache.plan'), hashtext(%s))", (input_uri,))
        version_id = ledger.register_version(conn, model)
        if request.incremental:
            check_same_schema(conn, version_id=version_id, schema_text=schema_text)
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
            incremental=request.incremental,
            prune_missing=request.prune_missing,
            input_schema=schema_text,
            rows_rejected_plan=scan.rejects.num_rows,
            basis_run_id=changes.basis_run_id if changes is not None else None,
            rows_unchanged_plan=changes.rows_unchanged if changes is not None else 0,
        )
        ledger.store_plan_rejects(conn, run_id, scan.rejects)
        if changes is not None:
            record_plan(conn, run_id, carried=len(changes.carried), input_stats=changes.input_stats)
    if changes is not None:
        refresh.adopt(changes, settings, run_id)
    fault_point("plan.after")
    return PlannedRun(
        run_id, resumed=False, finished=False, carried=changes.carried if changes is not None else None
    )


@contextmanager
def _lease_heartbeat(url: str, run_id: int, owner: str, lease_seconds: float) -> Iterator[None]:
    """Extend ``owner``'s lease every third of its length while the block runs, then release it.

    A beat that fails (the database restarting) is retried at the next one: the lease only
    lapses if the database stays away for two thirds of its length.
    """
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(lease_seconds / 3):
            try:
                with connection(url, autocommit=True) as conn:
                    if not runstate.heartbeat(conn, run_id, owner, lease_seconds):
                        log.warning("run %s: lease of %s was taken over by another process", run_id, owner)
                        return
            except Exception as exc:  # the next beat retries; the engine reports real failures
                log.warning("run %s: heartbeat failed (%s)", run_id, one_line(exc))

    with _in_background(beat, "predcache-lease", stop):
        yield


def _running_mode(settings: Settings) -> dict[str, Any]:
    """Beam engine options for a DirectRunner mode chosen in settings (``auto``: the engine decides)."""
    if settings.beam_running_mode == "auto":
        return {}
    return {"direct_running_mode": settings.beam_running_mode, "in_process_max_rows": 0}


@contextmanager
def _alongside(work: Callable[[], None] | None, name: str) -> Iterator[None]:
    """Run ``work`` in a thread while the block runs; wait for it after, and raise what it raised
    (the block's own error first)."""
    if work is None:
        yield
        return
    failure: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as exc:  # handed to the caller below
            failure.append(exc)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    try:
        yield
    finally:
        thread.join()
    if failure:
        raise failure[0]


@contextmanager
def _in_background(target: Callable[[], None], name: str, stop: threading.Event) -> Iterator[None]:
    """Run ``target`` in a daemon thread while the block runs; then set ``stop`` and join it."""
    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=10)


def record_failure(url: str, run_id: int, message: str, *, owner: str | None = None) -> None:
    """Mark the run failed on a fresh connection (the one in use may be what broke); never raises.

    A run another process holds, or that moved on meanwhile, is left as it is.
    """
    try:
        with connection(url, autocommit=True) as conn:
            ledger.mark_failed(conn, run_id, message, owner=owner)
    except Exception as exc:  # recording is best effort: the original error is what the user needs
        log.warning("run %s: could not record its failure (%s)", run_id, one_line(exc))


def _release(url: str, run_id: int, owner: str) -> None:
    try:
        with connection(url, autocommit=True) as conn:
            runstate.release(conn, run_id, owner)
    except Exception as exc:  # the lease then simply expires
        log.warning("run %s: could not release its lease (%s)", run_id, one_line(exc))


def score_run(
    settings: Settings,
    run_id: int,
    *,
    engine: str = "beam",
    engine_options: dict[str, Any] | None = None,
    fail_shards: frozenset[str] = frozenset(),
    on_progress: ProgressFn | None = None,
    owner: str | None = None,
    carried: np.ndarray | None = None,
) -> int:
    """Score the run's pending shards on ``engine``; returns how many shards were pending.

    An incremental run's carried-over pairs are stored meanwhile, in a thread (``carried``: the
    planner's, when this process planned the run; otherwise they are made again).

    The run is claimed for ``owner`` (default: a new identity of this process) with a lease
    that a heartbeat extends while the engine runs; a run another live process scores is
    refused. The lease is released when scoring ends.

    Raises:
        RunStateError: the run is abandoned, or another live process scores it.
        PredcacheError: the engine failed (the run is marked failed; score again to resume).
    """
    execute = _engine_execute(engine)
    url = cache_url(settings)
    owner = owner or runstate.owner_id()
    with connection(url, autocommit=True) as conn:
        run = ledger.get_run(conn, run_id)
        if run.status in ledger.FINISHED:
            return 0
        if run.status == "abandoned":
            raise RunStateError(f"run {run_id} was abandoned (its input changed); start a new run")
        model = load_model(
            settings.models_dir, run.model, run.version, signature=run.signature, threads=settings.ort_threads
        )
        digest = model.card.artifacts[model.file_name].sha256
        if run.artifact_sha256 is not None and digest != run.artifact_sha256:
            message = (
                f"run {run_id} was planned with {run.model}/{run.version} {model.file_name} sha256 "
                f"{run.artifact_sha256[:12]}…, the file now has {digest[:12]}…; versions are immutable: "
                "restore the model files or build a new version"
            )
            raise ModelCardError(message)
        source = Path(run.input_uri)
        files = list_input_files(source)
        if fingerprint(files, source) != run.input_fingerprint:
            message = f"the input of run {run_id} ({source}) changed after it was planned; start a new run"
            record_failure(url, run_id, message, owner=owner)
            raise InputError(message)
        files_in = files
        files = refresh.engine_files(conn, settings, run, model, files)
        attempt = ledger.start_attempt(
            conn, run_id, engine, owner=owner, lease_seconds=settings.lease_seconds
        )
        pending = ledger.planned_shards(conn, run_id, pending_only=True)
        store_carried = refresh.carried_pending(conn, run)
    fault_point("score.after_claim")
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
        columns=[model.card.key, *model.card.columns],
        files=files,
        shards=pending,
        batch_rows=settings.batch_rows,
        ort_threads=settings.ort_threads,
        workers=settings.workers,
        engine_options={
            "spark_master": settings.spark_master,
            "scratch_uri": settings.scratch,
            **_running_mode(settings),
            "ship_dir": str(settings.home / "shipping"),  # code archives for cluster workers
            **(engine_options or {}),
        },
        fail_shards=fail_shards,
    )
    log_path = settings.home / "logs" / f"run-{run_id}.log"
    try:
        with (
            _lease_heartbeat(url, run_id, owner, settings.lease_seconds),
            _progress_thread(url, run_id, on_progress),
            engine_output_to(log_path),
            _alongside(
                (lambda: refresh.store_carried(url, settings, run, model, files_in, carried))
                if store_carried
                else None,
                "predcache-carried-pairs",
            ),
        ):
            if pending:  # an incremental run may find every row unchanged: no shard to score
                execute(spec)
    except PredcacheError as exc:
        record_failure(url, run_id, str(exc), owner=owner)
        raise
    except Exception as exc:  # engines raise their own wrapped errors
        message = (
            f"run {run_id} failed in the {engine} engine: {one_line(exc)}; "
            f"rerun the same command to resume (engine log: {log_path})"
        )
        record_failure(url, run_id, message, owner=owner)
        raise EngineError(message) from exc
    _release(url, run_id, owner)
    fault_point("score.after_engine")
    return len(pending)


def verify_run(settings: Settings, run_id: int, *, owner: str | None = None) -> ledger.RunRecord:
    """Check the run is whole (see ``ledger.verify_run``) and mark it verified; idempotent.

    The input's fingerprint is taken again: files rewritten while the run scored fail it.
    ``owner``: the process that scored the run (its lease, if still held, does not block it).

    A ``--prune-missing`` run first writes its tombstones (once).
    """
    with connection(cache_url(settings), autocommit=True) as conn:
        run = ledger.get_run(conn, run_id)
        if run.status in ledger.FINISHED:
            return run
        if run.prune_missing:
            model = load_model(settings.models_dir, run.model, run.version, signature=run.signature)
            source = Path(run.input_uri)
            write_tombstones(
                conn,
                run_id=run_id,
                version_id=run.version_id,
                model=run.model,
                version=run.version,
                snapshot_keys=(
                    table.column(0).combine_chunks()
                    for path in list_input_files(source)
                    for table in iter_tables(path, [model.card.key], batch_rows=settings.batch_rows * 8)
                ),
            )
        try:
            source = Path(run.input_uri)
            now = fingerprint(list_input_files(source), source)
        except InputError as exc:
            now = f"unreadable: {exc}"
        verified = ledger.verify_run(
            conn, run_id, max_reject_fraction=settings.max_reject_fraction, owner=owner, fingerprint=now
        )
    if verified.incremental:
        refresh.remove_file(settings, run_id)
    fault_point("verify.after")
    return verified


def publish_run(settings: Settings, run_id: int) -> bool:
    """Publish one verified run (and make its version active); False if it already was.

    A rolled-back run is not published again here (a DAG retry or a rerun with ``--publish``
    must not undo a rollback): ``predcache publish --run ID`` does that on purpose.
    """
    with connection(cache_url(settings), autocommit=True) as conn:
        run = ledger.get_run(conn, run_id)
        if run.publish_id is not None:
            return False
        if run.status == "rolled_back":
            log.warning("run %s was rolled back; publish it by id to bring it back", run_id)
            return False
        publish(conn, model=run.model, version=run.version, run_ids=[run_id])
    fault_point("publish.after")
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
    steps: dict[str, float] = {}
    clock = [started]

    def lap(step: str) -> None:
        now = time.perf_counter()
        steps[step] = round(now - clock[0], 3)
        clock[0] = now

    if request.engine not in ENGINES:  # fail before any work
        raise ConfigError(f"unknown engine '{request.engine}'; choose one of: {', '.join(ENGINES)}")
    planned = plan_run(settings, request, before_work=lambda: _start_engine_early(settings, request))
    lap("plan")
    scored = 0
    if not planned.finished:
        owner = runstate.owner_id()
        scored = score_run(
            settings,
            planned.run_id,
            engine=request.engine,
            engine_options=request.engine_options,
            fail_shards=request.fail_shards,
            on_progress=on_progress,
            owner=owner,
            carried=planned.carried,
        )
        lap("score")
        verify_run(settings, planned.run_id, owner=owner)
        lap("verify")
    published = publish_run(settings, planned.run_id) if request.publish else False
    if request.publish:
        lap("publish")
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
    clock[0] = time.perf_counter()
    observed = observe_step(settings, planned.run_id, only_if_missing=planned.finished)
    lap("observe")
    summary = replace(summary, step_seconds=steps)
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
        rows_unchanged=run.rows_unchanged or 0,
        rows_pruned=run.rows_pruned or 0,
    )
