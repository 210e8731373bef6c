"""The run ledger: model versions, runs, their shard plans, and what is done."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from pipelines.core.model import Model
from pipelines.core.shards import Shard
from pipelines.errors import RejectThresholdError, RunStateError

UNFINISHED = ("planned", "scoring", "failed")
FINISHED = ("verified", "published")


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
        "ON CONFLICT (model, version) DO UPDATE SET model = EXCLUDED.model RETURNING version_id",
        (card.name, card.version, json.dumps(card.model_dump(mode="json"))),
    ).fetchone()
    assert row is not None
    version_id = int(row[0])
    name = partition_name(version_id)
    conn.execute(
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} "
            "(LIKE predictions INCLUDING DEFAULTS, CONSTRAINT {} CHECK (version_id = {}))"
        ).format(sql.Identifier(name), sql.Identifier(f"{name}_version"), sql.Literal(version_id))
    )
    return version_id


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

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> RunRecord:
        return cls(**{name: row[name] for name in cls.__dataclass_fields__})


def get_run(conn: psycopg.Connection[Any], run_id: int) -> RunRecord:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute("SELECT * FROM runs WHERE run_id = %s", (run_id,)).fetchone()
    if row is None:
        raise RunStateError(f"no run {run_id}; see `predcache runs list`")
    return RunRecord.from_row(row)


def list_runs(conn: psycopg.Connection[Any], *, model: str | None = None, limit: int = 20) -> list[RunRecord]:
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT * FROM runs WHERE %(model)s::text IS NULL OR model = %(model)s "
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
            "SELECT * FROM runs WHERE version_id = %s AND input_uri = %s AND input_fingerprint = %s "
            "AND status = ANY(%s) ORDER BY run_id DESC LIMIT 1",
            (version_id, input_uri, fingerprint, list(statuses)),
        ).fetchone()
    return RunRecord.from_row(row) if row else None


def abandon_stale_runs(
    conn: psycopg.Connection[Any], *, version_id: int, input_uri: str, fingerprint: str
) -> int:
    """Unfinished runs over an older version of this input can never finish: mark them abandoned."""
    cur = conn.execute(
        "UPDATE runs SET status = 'abandoned', finished_at = now(), "
        "error = 'input changed before it finished' "
        "WHERE version_id = %s AND input_uri = %s AND input_fingerprint <> %s AND status = ANY(%s)",
        (version_id, input_uri, fingerprint, list(UNFINISHED)),
    )
    return cur.rowcount


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
) -> int:
    """Insert a run and its whole shard plan (one transaction: the plan exists before any work)."""
    row = conn.execute(
        "INSERT INTO runs (version_id, model, version, engine, signature, input_uri, input_fingerprint, "
        "shard_rows, "
        "rows_planned) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING run_id",
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


def start_attempt(conn: psycopg.Connection[Any], run_id: int, engine: str) -> int:
    """Mark the run as scoring and count the attempt; returns the attempt number."""
    row = conn.execute(
        "UPDATE runs SET status = 'scoring', engine = %s, attempts = attempts + 1, error = NULL, "
        "started_at = coalesce(started_at, now()) WHERE run_id = %s RETURNING attempts",
        (engine, run_id),
    ).fetchone()
    assert row is not None
    return int(row[0])


def mark_failed(conn: psycopg.Connection[Any], run_id: int, error: str) -> None:
    conn.execute("UPDATE runs SET status = 'failed', error = %s WHERE run_id = %s", (error[:2000], run_id))


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


def verify_run(conn: psycopg.Connection[Any], run_id: int, *, max_reject_fraction: float) -> RunRecord:
    """Check the run is whole, then mark it verified.

    Every planned shard is done; the shards' counts add up to the plan. The rows stored
    equal those counts by construction: each shard's counts are the row counts its COPYs
    reported, checked in the transaction that stored them (``store.writer``), so no scan of
    the run's rows is needed. (No key can be stored twice: a key has one shard, a shard's
    keys are unique after validation, and a shard commits once.)

    Raises:
        RunStateError: a check failed (the run is marked failed with the reason).
        RejectThresholdError: too large a share of rows was rejected.
    """
    pending, rows_planned, shard_in, shard_out, shard_rej = conn.execute(
        "SELECT count(*) FILTER (WHERE status <> 'done'), coalesce(sum(rows_planned), 0), "
        "coalesce(sum(rows_in), 0), coalesce(sum(rows_out), 0), coalesce(sum(rows_rejected), 0) "
        "FROM run_shards WHERE run_id = %s",
        (run_id,),
    ).fetchone() or (0, 0, 0, 0, 0)
    version_id = get_run(conn, run_id).version_id
    problems = []
    if pending:
        problems.append(f"{pending} shard(s) not done")
    if shard_in != rows_planned:
        problems.append(f"shards read {shard_in} rows, the plan counted {rows_planned}")
    if shard_out + shard_rej != shard_in:
        problems.append(f"rows_out {shard_out} + rows_rejected {shard_rej} != rows_in {shard_in}")
    if problems:
        message = f"run {run_id} failed verification: " + "; ".join(problems)
        mark_failed(conn, run_id, message)
        raise RunStateError(message)
    fraction = shard_rej / shard_in if shard_in else 0.0
    if fraction > max_reject_fraction:
        message = (
            f"run {run_id} rejected {shard_rej} of {shard_in} rows ({fraction:.1%}), above the allowed "
            f"{max_reject_fraction:.1%}; see `predcache runs show {run_id}` for reasons, or raise "
            "PREDCACHE_MAX_REJECT_FRACTION"
        )
        mark_failed(conn, run_id, message)
        raise RejectThresholdError(message)
    attach_partition(conn, version_id)
    conn.execute(
        "UPDATE runs SET status = 'verified', rows_in = %s, rows_out = %s, rows_rejected = %s, "
        "finished_at = now(), seconds = extract(epoch FROM now() - started_at) WHERE run_id = %s",
        (shard_in, shard_out, shard_rej, run_id),
    )
    return get_run(conn, run_id)


def reject_reasons(conn: psycopg.Connection[Any], run_id: int, *, limit: int = 10) -> list[tuple[str, int]]:
    """The most common reject reasons of a run, with counts."""
    rows = conn.execute(
        "SELECT reason, count(*) FROM rejects WHERE run_id = %s GROUP BY reason ORDER BY 2 DESC, 1 LIMIT %s",
        (run_id, limit),
    ).fetchall()
    return [(str(reason), int(count)) for reason, count in rows]
