"""Retention (`predcache gc`): delete runs nobody can see again and drop versions nobody can roll back to.

What stays, whatever the options say:

* every row ``predictions_current`` serves, and every row it would serve after rolling back
  the newest publish (the *previous publish*): one rollback always works;
* every publish made within ``keep_days`` and every row those publishes' rollbacks would show
  (the rollback window);
* the ``keep_versions`` newest versions of each model, the active one, and any version with a
  run active within ``keep_days`` (partitions are dropped only outside all of these);
* runs that are planned or scoring and were active within ``SCORING_GRACE`` (a live run).

What goes: runs that are not (or no longer) published — failed, abandoned, rolled back,
verified but never published — once their last activity is older than ``keep_days``, and
published runs that are *superseded*: every key they hold is also held by a later run of the
same version in a publish older than the window, so no rollback within it can show them again.
A run's predictions, rejects, shard rows, stats and any other row that references it go with it.

The whole collection of one model runs in one transaction under the model's publish lock, so a
publish or rollback of that model waits for it (and it for them); readers never wait except
for the short lock a partition drop takes (bounded by ``LOCK_TIMEOUT``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import psycopg
from psycopg import sql

from pipelines.errors import StoreError
from pipelines.store.ledger import partition_name
from pipelines.store.publish import _lock_model

#: A planned or scoring run active this recently may still be running: never collected.
SCORING_GRACE = timedelta(days=1)
#: How long gc waits for a lock (a partition drop needs the parent table briefly) before giving up.
LOCK_TIMEOUT = "10s"

_LAST_ACTIVITY = """
greatest(
    r.created_at, r.started_at, r.finished_at,
    (SELECT max(s.done_at) FROM run_shards s WHERE s.run_id = r.run_id),
    (SELECT max(greatest(p.published_at, p.rolled_back_at)) FROM publishes p
      WHERE p.model = r.model AND r.run_id = ANY(p.run_ids))
)"""


@dataclass(frozen=True)
class RunToDelete:
    run_id: int
    version: str
    status: str
    reason: str  # "unpublished" (failed, abandoned, rolled back, never published) or "superseded"


@dataclass
class GcResult:
    """What one gc pass deleted (or, with ``dry_run``, would delete)."""

    dry_run: bool
    runs: list[RunToDelete] = field(default_factory=list)
    dropped_versions: list[tuple[str, str]] = field(default_factory=list)  # (model, version)
    predictions_deleted: int = 0

    def summary(self) -> str:
        verb = "would delete" if self.dry_run else "deleted"
        kinds: dict[str, int] = {}
        for run in self.runs:
            kinds[run.reason] = kinds.get(run.reason, 0) + 1
        detail = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items())) or "none"
        dropped = ", ".join(f"{m}/{v}" for m, v in self.dropped_versions) or "none"
        return (
            f"gc {verb} {len(self.runs)} run(s) ({detail}) with {self.predictions_deleted} prediction(s); "
            f"{'would drop' if self.dry_run else 'dropped'} version partitions: {dropped}"
        )


def collect_garbage(
    conn: psycopg.Connection[Any],
    *,
    keep_versions: int,
    keep_days: float,
    model: str | None = None,
    dry_run: bool = False,
) -> GcResult:
    """Delete what no reader and no rollback within the window can reach; see the module docstring.

    Args:
        conn: an autocommit connection (each model is collected in a transaction of its own).
        keep_versions: newest versions of each model whose partitions are always kept (at least 1).
        keep_days: the rollback window in days (0: keep only what serves now and after one rollback).
        model: collect only this model (default: every model in the cache).
        dry_run: compute and report, delete nothing.

    Returns:
        The runs and version partitions deleted (or that would be).

    Raises:
        StoreError: a lock could not be taken within LOCK_TIMEOUT (readers or a run hold it; retry).
    """
    if keep_versions < 1:
        raise ValueError("keep_versions must be at least 1: the active version is always kept")
    result = GcResult(dry_run=dry_run)
    models = (
        [model]
        if model is not None
        else [str(r[0]) for r in conn.execute("SELECT DISTINCT model FROM model_versions ORDER BY 1")]
    )
    vacuum: list[str] = []
    for name in models:
        try:
            with conn.transaction(force_rollback=dry_run):
                conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(LOCK_TIMEOUT)))
                _lock_model(conn, name)
                vacuum += _collect_model(conn, name, result, keep_versions, timedelta(days=keep_days))
        except psycopg.errors.LockNotAvailable as exc:
            raise StoreError(
                f"gc of model {name} could not take a lock within {LOCK_TIMEOUT} (a long query or a "
                "publish holds it); retry later"
            ) from exc
    if not dry_run:
        for table in vacuum:  # dead rows would otherwise sit in the key index until autovacuum
            conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(sql.Identifier(table)))
    return result


def _collect_model(
    conn: psycopg.Connection[Any], model: str, result: GcResult, keep_versions: int, window: timedelta
) -> list[str]:
    """Collect one model inside the caller's transaction; returns the partitions to vacuum."""
    standing = conn.execute(
        "SELECT publish_id, version, published_at >= now() - %s AS recent FROM publishes "
        "WHERE model = %s AND rolled_back_at IS NULL ORDER BY publish_id DESC",
        (window, model),
    ).fetchall()
    # Protected publishes: the newest standing one and every one inside the window. Rolling
    # them all back lands on the newest standing publish below them (the floor).
    protected = [row for i, row in enumerate(standing) if i == 0 or row[2]]
    boundary = min((int(r[0]) for r in protected), default=None)
    floor = next((r for r in standing if boundary is not None and int(r[0]) < boundary), None)
    keep_version_names = {str(r[1]) for r in protected} | ({str(floor[1])} if floor else set())
    active = conn.execute("SELECT version FROM active_versions WHERE model = %s", (model,)).fetchone()
    if active:
        keep_version_names.add(str(active[0]))
    versions = conn.execute(
        "SELECT v.version_id, v.version, "
        "EXISTS (SELECT 1 FROM runs r WHERE r.version_id = v.version_id AND "
        + _LAST_ACTIVITY
        + " >= now() - %s)"
        " FROM model_versions v WHERE v.model = %s ORDER BY v.version_id DESC",
        (window, model),
    ).fetchall()
    to_vacuum: list[str] = []
    for rank, (version_id, version, recent) in enumerate(versions):
        version_id, version = int(version_id), str(version)
        table = partition_name(version_id)
        exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
        if rank >= keep_versions and version not in keep_version_names and not recent:
            doomed = [
                RunToDelete(int(r[0]), version, str(r[1]), "dropped version")
                for r in conn.execute(
                    "SELECT run_id, status FROM runs WHERE version_id = %s ORDER BY run_id", (version_id,)
                )
            ]
            if exists and exists[0]:
                counted = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))
                result.predictions_deleted += int((counted.fetchone() or (0,))[0])
                conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(table)))
                result.dropped_versions.append((model, version))
            _delete_runs(conn, [r.run_id for r in doomed])
            result.runs += doomed
            continue
        doomed = _unpublished(conn, version_id, version, window) + _superseded(
            conn, version_id, version, table, boundary
        )
        if doomed and exists and exists[0]:
            deleted = conn.execute(
                sql.SQL("DELETE FROM {} WHERE run_id = ANY(%s)").format(sql.Identifier(table)),
                ([r.run_id for r in doomed],),
            )
            result.predictions_deleted += deleted.rowcount
            to_vacuum.append(table)
        _delete_runs(conn, [r.run_id for r in doomed])
        result.runs += doomed
    return to_vacuum


def _standing(alias: str) -> str:
    return (
        f"{alias}.publish_id IS NOT NULL AND EXISTS (SELECT 1 FROM publishes sp "
        f"WHERE sp.publish_id = {alias}.publish_id AND sp.rolled_back_at IS NULL)"
    )


def _unpublished(
    conn: psycopg.Connection[Any], version_id: int, version: str, window: timedelta
) -> list[RunToDelete]:
    """Runs of the version not in a standing publish, idle for longer than the window (and grace)."""
    rows = conn.execute(
        "SELECT r.run_id, r.status FROM runs r WHERE r.version_id = %s AND NOT (" + _standing("r") + ") "
        "AND " + _LAST_ACTIVITY + " < now() - %s "
        "AND (r.status NOT IN ('planned', 'scoring') OR " + _LAST_ACTIVITY + " < now() - %s) "
        "ORDER BY r.run_id",
        (version_id, window, SCORING_GRACE),
    ).fetchall()
    return [RunToDelete(int(r[0]), version, str(r[1]), "unpublished") for r in rows]


def _superseded(
    conn: psycopg.Connection[Any], version_id: int, version: str, table: str, boundary: int | None
) -> list[RunToDelete]:
    """Standing published runs below the window whose every key a later such run holds too.

    predictions_current shows, per key, the row of the highest (publish_id, run_id): a run all
    of whose keys are in a later run that stays published through every rollback of the window
    can never be shown again.
    """
    if (
        boundary is None
        or not (conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone() or [0])[0]
    ):
        return []
    published = conn.execute(
        "SELECT r.run_id, r.status FROM runs r WHERE r.version_id = %s AND " + _standing("r") + " "
        "AND r.publish_id < %s ORDER BY r.publish_id, r.run_id",
        (version_id, boundary),
    ).fetchall()
    doomed: list[RunToDelete] = []
    covered_query = sql.SQL(
        "SELECT NOT EXISTS (SELECT 1 FROM {t} p WHERE p.run_id = %s AND NOT EXISTS "
        "(SELECT 1 FROM {t} q WHERE q.key = p.key AND q.run_id = ANY(%s)))"
    ).format(t=sql.Identifier(table))
    for i, (run_id, status) in enumerate(published):
        later = [int(r[0]) for r in published[i + 1 :]]
        if not later:
            break
        covered = conn.execute(covered_query, (int(run_id), later)).fetchone()
        if covered and covered[0]:
            doomed.append(RunToDelete(int(run_id), version, str(status), "superseded"))
    return doomed


def _delete_runs(conn: psycopg.Connection[Any], run_ids: list[int]) -> None:
    """Delete runs and every row that references them (cascading or not: tables other features add)."""
    if not run_ids:
        return
    references = conn.execute(
        "SELECT c.conrelid::regclass::text, a.attname FROM pg_constraint c "
        "JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1] "
        "WHERE c.contype = 'f' AND c.confrelid = 'runs'::regclass AND cardinality(c.conkey) = 1 "
        "AND c.confdeltype IN ('a', 'r')"
    ).fetchall()
    for table, column in references:
        conn.execute(
            sql.SQL("DELETE FROM {} WHERE {} = ANY(%s)").format(sql.SQL(table), sql.Identifier(column)),
            (run_ids,),
        )
    conn.execute("DELETE FROM runs WHERE run_id = ANY(%s)", (run_ids,))
