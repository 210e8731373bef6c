"""The run ledger: model versions, runs, their shard plans, and what is done."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
import pyarrow as pa
from psycopg import sql
from psycopg.rows import dict_row

from pipelines.core.model import Model
from pipelines.core.shards import Shard
from pipelines.errors import ModelCardError, RejectThresholdError, RunStateError
from pipelines.store import runstate

UNFINISHED = ("planned", "scoring", "failed")
FINISHED = ("verified", "published", "rolled_back")
#: The shard id of rows rejected while planning (null or empty keys), in ``rejects``.
PLAN_SHARD_ID = "plan"


def partition_name(version_id: int) -> str:
    return f"predictions_v{version_id}"


def register_version(conn: psycopg.Connection[Any], model: Model) -> int:
    """Record the model version (idempotent) and make sure its predictions table exists.

    A new version's table starts detached from ``predictions`` and without indexes: its
    first run loads it at unindexed COPY speed, and ``attach_partition`` indexes and
    attaches it once that run is verified (index after load is about twice as fast as
    loading into an indexed table). Later runs of the version write into the attached one.
    """
    card = model.card
    row = conn.execute(
        "INSERT INTO model_versions (model, version, card) VALUES (%s, %s, %s) "
        "ON CONFLICT (model, version) DO UPDATE SET model = EXCLUDED.model RETURNING version_id, card",
        (card.name, card.version, json.dumps(card.model_dump(mode="json"))),
    ).fetchone()
    assert row is not None
    version_id = int(row[0])
    _check_same_artifacts(model, row[1])
    name = partition_name(version_id)
    conn.execute(
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} "
            "(LIKE predictions INCLUDING DEFAULTS, CONSTRAINT {} CHECK (version_id = {}))"
        ).format(sql.Identifier(name), sql.Identifier(f"{name}_version"), sql.Literal(version_id))
    )
    return version_id


def registered_version(conn: psycopg.Connection[Any], model: Model) -> int | None:
    """The version's id if the cache knows it (without registering it).

    Raises:
        ModelCardError: the model was rebuilt under a version the cache already holds.
    """
    row = conn.execute(
        "SELECT version_id, card FROM model_versions WHERE model = %s AND version = %s",
        (model.card.name, model.card.version),
    ).fetchone()
    if row is None:
        return None
    _check_same_artifacts(model, row[1])
    return int(row[0])


def _check_same_artifacts(model: Model, registered: dict[str, Any]) -> None:
    """Versions are immutable: an artifact the registered card knows must have the same sha256.

    Raises:
        ModelCardError: the model was rebuilt under a version the cache already holds.
    """
    known = registered.get("artifacts", {})
    for name, artifact in sorted(model.card.artifacts.items()):
        before = known.get(name, {}).get("sha256")
        if before is not None and before != artifact.sha256:
            raise ModelCardError(
                f"{model.name}/{model.version} is registered with {name} sha256 {before[:12]}…, the files "
                f"now have {artifact.sha256[:12]}…; versions are immutable: build the changed model as a "
                "new version (`predcache models build NAME --version N`)"
            )


def attach_partition(conn: psycopg.Connection[Any], version_id: int) -> bool:
    """Index a version's predictions table and attach it to ``predictions`` (once); True if done now.

    The CHECK constraint created with the table lets ATTACH skip its validation scan, and
    the partitioned indexes of ``predictions`` adopt the matching indexes built here.
    """
    name = partition_name(version_id)
    conn.execute("SELECT pg_advisory_xact_lock(hashtext('predcache.attach'), %s)", (version_id,))
    attached = conn.execute(
        "SELECT 1 FROM pg_inherits WHERE inhrelid = to_regclass(%s) AND inhparent = 'predictions'::regclass",
        (name,),
    ).fetchone()
    if attached:
        return False
    table = sql.Identifier(name)
    conn.execute(
        sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (key, run_id)").format(
            sql.Identifier(f"{name}_key_idx"), table
        )
    )
    conn.execute(
        sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (run_id)").format(
            sql.Identifier(f"{name}_run_idx"), table
        )
    )
    conn.execute(
        sql.SQL("ALTER TABLE predictions ATTACH PARTITION {} FOR VALUES IN ({})").format(
            table, sql.Literal(version_id)
        )
    )
    return True


@dataclass(frozen=True)
class RunRecord:
    run_id: int
    version_id: int
    model: str
    version: str
    engine: str
    signature: str
    input_uri: str
    input_fingerprint: str
    shard_rows: int
    status: str
    rows_planned: int
    rows_in: int | None
    rows_out: int | None
    rows_rejected: int | None
    attempts: int
    created_at: datetime
    seconds: float | None
    publish_id: int | None
    error: str | None
    owner: str | None = None
    lease_expires_at: datetime | None = None
    artifact_sha256: str | None = None
    rows_rejected_plan: int = 0
    #: Scoring, but its owner's lease expired: the owner died; any process may resume it.
    stale: bool = False
    incremental: bool = False
    prune_missing: bool = False
    rows_unchanged: int | None = None
    rows_pruned: int | None = None
    #: Incremental runs: the run whose pairs the planner compared with, and the rows it left out.
    basis_run_id: int | None = None
    rows_unchanged_plan: int = 0
    #: Incremental runs: how many pairs the run carries over (stored while it scores).
    pairs_carried_plan: int | None = None
    #: Incremental runs: input statistics the planner took (``observe`` uses them).
    input_stats_plan: dict[str, Any] | None = None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> RunRecord:
        return cls(**{name: row[name] for name in cls.__dataclass_fields__ if name in row})


_RUN_COLUMNS = "*, (status = 'scoring' AND lease_expires_at < now()) IS TRUE AS stale"


def carried_pairs_stored(conn: psycopg.Connection[Any], run_id: int) -> int:
    """How many carried-over pairs of an incremental run are stored (sizes only: nothing is read)."""
    row = conn.execute(
        "SELECT coalesce(sum(length(pairs)), 0) / 16 FROM run_fingerprints "
        "WHERE run_id = %s AND part LIKE 'carried-%%'",
        (run_id,),
    ).fetchone()
    return int(row[0]) if row else 0


def get_run(conn: psycopg.Connection[Any], run_id: int) -> RunRecord:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id = %s", (run_id,)).fetchone()
    if row is None:
        raise RunStateError(f"no run {run_id}; see `predcache runs list`")
    return RunRecord.from_row(row)


def list_runs(conn: psycopg.Connection[Any], *, model: str | None = None, limit: int = 20) -> list[RunRecord]:
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            f"SELECT {_RUN_COLUMNS} FROM runs WHERE %(model)s::text IS NULL OR model = %(model)s "
            "ORDER BY run_id DESC LIMIT %(limit)s",
            {"model": model, "limit": limit},
        ).fetchall()
    return [RunRecord.from_row(row) for row in rows]


def find_run(
    conn: psycopg.Connection[Any],
    *,
    version_id: int,
    input_uri: str,
    fingerprint: str,
    statuses: tuple[str, ...],
) -> RunRecord | None:
    """The newest run of this version over this exact input whose status is in ``statuses``."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            f"SELECT {_RUN_COLUMNS} FROM runs WHERE version_id = %s AND input_uri = %s "
            "AND input_fingerprint = %s "
            "AND status = ANY(%s) ORDER BY run_id DESC LIMIT 1",
            (version_id, input_uri, fingerprint, list(statuses)),
        ).fetchone()
    return RunRecord.from_row(row) if row else None


def abandon_stale_runs(
    conn: psycopg.Connection[Any], *, version_id: int, input_uri: str, fingerprint: str
) -> int:
    """Unfinished runs over an older version of this input can never finish: mark them abandoned.

    A run whose owner still holds its lease is left alone (its own verify will fail).
    """
    rows = conn.execute(
        "SELECT run_id FROM runs WHERE version_id = %s AND input_uri = %s AND input_fingerprint <> %s "
        "AND status = ANY(%s) AND (status <> 'scoring' OR lease_expires_at IS NULL "
        "OR lease_expires_at < now())",
        (version_id, input_uri, fingerprint, list(UNFINISHED)),
    ).fetchall()
    abandoned = 0
    for (run_id,) in rows:
        try:
            runstate.move(
                conn,
                int(run_id),
                "abandoned",
                owner=runstate.owner_id(),
                detail="input changed before it finished",
                set_sql="finished_at = now(), error = 'input changed before it finished'",
            )
            abandoned += 1
        except RunStateError:
            continue  # moved on meanwhile (finished, or taken by a live process)
    return abandoned


def create_run(
    conn: psycopg.Connection[Any],
    *,
    version_id: int,
    model: Model,
    engine: str,
    input_uri: str,
    fingerprint: str,
    shard_rows: int,
    shards: list[Shard],
    rows_rejected_plan: int = 0,
    incremental: bool = False,
    prune_missing: bool = False,
    input_schema: str | None = None,
    basis_run_id: int | None = None,
    rows_unchanged_plan: int = 0,
) -> int:
    """Insert a run and its whole shard plan (one transaction: the plan exists before any work).

    The run records the sha256 of the ONNX file it scores with (``model.file_name``),
    how many rows planning rejected (``rows_rejected_plan``, stored by ``store_plan_rejects``)
    and, for an incremental run, the run it compared with and how many rows it left out as
    unchanged (they are in no shard).
    """
    row = conn.execute(
        "INSERT INTO runs (version_id, model, version, engine, signature, input_uri, input_fingerprint, "
        "shard_rows, rows_planned, artifact_sha256, rows_rejected_plan, incremental, prune_missing, "
        "input_schema, basis_run_id, rows_unchanged_plan) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING run_id",
        (
            version_id,
            model.name,
            model.version,
            engine,
            model.signature,
            input_uri,
            fingerprint,
            shard_rows,
            sum(s.rows for s in shards),
            model.card.artifacts[model.file_name].sha256,
            rows_rejected_plan,
            incremental,
            prune_missing,
            input_schema,
            basis_run_id,
            rows_unchanged_plan,
        ),
    ).fetchone()
    assert row is not None
    run_id = int(row[0])
    with conn.cursor().copy(
        "COPY run_shards (run_id, shard_id, hash_lo, hash_hi, rows_planned) FROM STDIN"
    ) as copy:
        for shard in shards:
            copy.write_row((run_id, shard.shard_id, shard.lo, shard.hi, shard.rows))
    return run_id


def store_plan_rejects(conn: psycopg.Connection[Any], run_id: int, rejects: pa.Table) -> None:
    """Store the rows planning rejected (``core.inputs.scan_keys``) under shard id ``plan``."""
    if rejects.num_rows == 0:
        return
    with conn.cursor().copy("COPY rejects (run_id, shard_id, key, reason, row) FROM STDIN") as copy:
        for key, reason, row in zip(
            rejects.column("key").to_pylist(),
            rejects.column("reason").to_pylist(),
            rejects.column("row").to_pylist(),
            strict=True,
        ):
            copy.write_row((run_id, PLAN_SHARD_ID, key, reason, row))


def planned_shards(conn: psycopg.Connection[Any], run_id: int, *, pending_only: bool) -> list[Shard]:
    """The run's shards (all, or those not done yet), ordered by hash range."""
    records = conn.execute(
        "SELECT shard_id, hash_lo, hash_hi, rows_planned FROM run_shards WHERE run_id = %s "
        "AND (NOT %s OR status = 'pending') ORDER BY hash_lo",
        (run_id, pending_only),
    ).fetchall()
    shards = []
    for shard_id, lo, hi, rows in records:
        depth_text, index_text = shard_id.split("-")
        shards.append(
            Shard(lo=int(lo), hi=int(hi), depth=int(depth_text), index=int(index_text, 16), rows=int(rows))
        )
    return shards


def start_attempt(
    conn: psycopg.Connection[Any],
    run_id: int,
    engine: str,
    *,
    owner: str,
    lease_seconds: float = runstate.DEFAULT_LEASE_SECONDS,
) -> int:
    """Claim the run for ``owner`` (planned, failed, or scoring with a free lease -> scoring).

    Returns:
        The attempt number.

    Raises:
        RunStateError: the run is finished or abandoned, or another live process scores it.
    """
    runstate.move(
        conn,
        run_id,
        "scoring",
        owner=owner,
        detail=f"attempt {get_run(conn, run_id).attempts + 1}",
        set_sql="engine = %(engine)s, attempts = attempts + 1, error = NULL, owner = %(owner)s, "
        "lease_expires_at = now() + make_interval(secs => %(lease)s), heartbeat_at = now(), "
        "started_at = coalesce(started_at, now())",
        params={"engine": engine, "lease": lease_seconds},
    )
    return get_run(conn, run_id).attempts


def mark_failed(conn: psycopg.Connection[Any], run_id: int, error: str, *, owner: str | None = None) -> None:
    """planned or scoring -> failed, recording ``error``; ``owner`` must hold (or take) the lease.

    Raises:
        RunStateError: the run is in another state, or another live process holds its lease.
    """
    runstate.move(
        conn,
        run_id,
        "failed",
        owner=owner or runstate.owner_id(),
        detail=error,
        set_sql="error = %(error)s, lease_expires_at = NULL",
        params={"error": error[:2000]},
    )


@dataclass(frozen=True)
class Progress:
    shards_total: int
    shards_done: int
    rows_planned: int
    rows_done: int


def progress(conn: psycopg.Connection[Any], run_id: int) -> Progress:
    row = conn.execute(
        "SELECT count(*), count(*) FILTER (WHERE status = 'done'), coalesce(sum(rows_planned), 0), "
        "coalesce(sum(rows_in) FILTER (WHERE status = 'done'), 0) FROM run_shards WHERE run_id = %s",
        (run_id,),
    ).fetchone()
    assert row is not None
    return Progress(*(int(v) for v in row))


def verify_run(
    conn: psycopg.Connection[Any],
    run_id: int,
    *,
    max_reject_fraction: float,
    owner: str | None = None,
    fingerprint: str | None = None,
) -> RunRecord:
    """Check the run is whole, then mark it verified (scoring -> verified).

    Every planned shard is done and read exactly the rows the plan counted for it; the
    input's fingerprint is still the planned one (``fingerprint``, when given: files
    rewritten mid-run fail). The rows stored equal the ledger's counts by construction: each
    shard's counts are the row counts its COPYs reported, checked in the transaction that
    stored them (``store.writer``), so no scan of the run's rows is needed. (No key can be
    stored twice: a key has one shard, a shard's keys are unique after validation, and a
    shard commits once.)

    Raises:
        RunStateError: the run is not scoring, another process holds its lease, or a check
            failed (the run is then marked failed with the reason, committed even when the
            caller's transaction rolls back: use an autocommit connection).
        RejectThresholdError: too large a share of rows was rejected (the run is marked failed).
    """
    run = get_run(conn, run_id)
    if run.status not in runstate.EDGES["verified"]:
        raise RunStateError(
            f"run {run_id} is {run.status}; it cannot become verified (allowed from: scoring)"
        )
    owner = owner or runstate.owner_id()
    pending, rows_planned, shard_in, shard_out, shard_rej = conn.execute(
        "SELECT count(*) FILTER (WHERE status <> 'done'), coalesce(sum(rows_planned), 0), "
        "coalesce(sum(rows_in), 0), coalesce(sum(rows_out), 0), coalesce(sum(rows_rejected), 0) "
        "FROM run_shards WHERE run_id = %s",
        (run_id,),
    ).fetchone() or (0, 0, 0, 0, 0)
    uneven = conn.execute(
        "SELECT shard_id, rows_in, rows_planned FROM run_shards WHERE run_id = %s AND status = 'done' "
        "AND rows_in IS DISTINCT FROM rows_planned ORDER BY hash_lo",
        (run_id,),
    ).fetchall()
    plan_rej = run.rows_rejected_plan
    problems = []
    if fingerprint is not None and fingerprint != run.input_fingerprint:
        problems.append(f"its input {run.input_uri} changed after it was planned (start a new run)")
    if pending:
        problems.append(f"{pending} shard(s) not done")
    if uneven:
        shown = ", ".join(f"shard {s} read {i} rows, planned {p}" for s, i, p in uneven[:5])
        problems.append(f"{len(uneven)} shard(s) read other rows than planned ({shown})")
    if shard_in != rows_planned:
        problems.append(f"shards read {shard_in} rows, the plan counted {rows_planned}")
    if shard_out + shard_rej != shard_in:
        problems.append(f"rows_out {shard_out} + rows_rejected {shard_rej} != rows_in {shard_in}")
    if run.pairs_carried_plan is not None:
        carried = carried_pairs_stored(conn, run_id)
        if carried != run.pairs_carried_plan:
            problems.append(f"{carried} of {run.pairs_carried_plan} carried-over pairs stored")
    if problems:
        message = f"run {run_id} failed verification: " + "; ".join(problems)
        mark_failed(conn, run_id, message, owner=owner)
        raise RunStateError(message)
    unchanged = run.rows_unchanged_plan
    rows_in = shard_in + plan_rej + unchanged
    rejected = shard_rej + plan_rej
    # Of every input row, unchanged ones included: the share a full run of this input would see.
    fraction = rejected / rows_in if rows_in else 0.0
    if fraction > max_reject_fraction:
        message = (
            f"run {run_id} rejected {rejected} of {rows_in} rows ({fraction:.1%}), above the allowed "
            f"{max_reject_fraction:.1%}; see `predcache runs show {run_id}` for reasons, or raise "
            "PREDCACHE_MAX_REJECT_FRACTION"
        )
        mark_failed(conn, run_id, message, owner=owner)
        raise RejectThresholdError(message)
    with conn.transaction():
        attach_partition(conn, run.version_id)
        runstate.move(
            conn,
            run_id,
            "verified",
            owner=owner,
            detail=f"{rows_in} rows in, {shard_out} out, {rejected} rejected",
            set_sql="rows_in = %(rows_in)s, rows_out = %(rows_out)s, rows_rejected = %(rejected)s, "
            "rows_unchanged = %(unchanged)s, lease_expires_at = NULL, finished_at = now(), "
            "seconds = extract(epoch FROM now() - started_at)",
            params={"rows_in": rows_in, "rows_out": shard_out, "rejected": rejected, "unchanged": unchanged},
        )
    return get_run(conn, run_id)


def reject_reasons(conn: psycopg.Connection[Any], run_id: int, *, limit: int = 10) -> list[tuple[str, int]]:
    """The most common reject reasons of a run, with counts."""
    rows = conn.execute(
        "SELECT reason, count(*) FROM rejects WHERE run_id = %s GROUP BY reason ORDER BY 2 DESC, 1 LIMIT %s",
        (run_id, limit),
    ).fetchall()
    return [(str(reason), int(count)) for reason, count in rows]


def runs_being_scored(database_url: str) -> Callable[[list[int]], list[int]]:
    """A function: run ids -> those whose runs are being scored now (their scratch stays)."""

    def scoring(run_ids: list[int]) -> list[int]:
        from pipelines.store.db import connection

        with connection(database_url, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT run_id FROM runs WHERE run_id = ANY(%s) AND status = 'scoring'", (run_ids,)
            ).fetchall()
        return [int(r[0]) for r in rows]

    return scoring
