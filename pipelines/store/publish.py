"""Publish and rollback: each moves what readers see in one transaction."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

from pipelines.errors import RunStateError
from pipelines.store import runstate
from pipelines.store.incremental import check_basis


@dataclass(frozen=True)
class PublishResult:
    publish_id: int
    model: str
    version: str
    prev_version: str | None
    run_ids: list[int]


@dataclass(frozen=True)
class RollbackResult:
    """What a rollback undid and what readers see now."""

    publish_id: int
    model: str
    #: The version of the publish that was undone, and its runs (now rolled_back).
    rolled_back_version: str
    run_ids: list[int]
    #: The version readers see now (None: nothing is active for the model).
    active_version: str | None

    def message(self) -> str:
        now = f"{self.model}/{self.active_version}" if self.active_version else "nothing"
        return (
            f"rolled back publish {self.publish_id} of {self.model}/{self.rolled_back_version} "
            f"(runs {self.run_ids}); active now: {now}"
        )


def _lock_model(conn: psycopg.Connection[Any], model: str) -> None:
    # Serialise publish/rollback per model; readers never wait on this lock.
    conn.execute("SELECT pg_advisory_xact_lock(hashtext('predcache.publish:' || %s))", (model,))


def publish(
    conn: psycopg.Connection[Any], *, model: str, version: str, run_ids: list[int] | None = None
) -> PublishResult:
    """Make ``version`` the active version of ``model`` and publish its verified runs.

    Args:
        conn: a connection in autocommit mode (this function owns its transaction).
        model: the model name.
        version: the version to activate.
        run_ids: runs to publish (verified, or rolled back: publishing by id brings a rolled-back
            run back); None publishes, for each input of the version, its newest run if that is
            verified (never a rolled-back run, nor an older run of an input published since).

    Raises:
        RunStateError: unknown version, a listed run is not verified, or nothing would be visible.
    """
    with conn.transaction():
        _lock_model(conn, model)
        row = conn.execute(
            "SELECT version_id FROM model_versions WHERE model = %s AND version = %s", (model, version)
        ).fetchone()
        if row is None:
            raise RunStateError(
                f"model {model} has no version {version} in the cache; run it first (`predcache run`)"
            )
        version_id = int(row[0])
        if run_ids is None:
            rows = conn.execute(
                "SELECT run_id FROM (SELECT DISTINCT ON (input_uri) run_id, status FROM runs "
                "WHERE version_id = %s AND status IN ('verified', 'published', 'rolled_back') "
                "ORDER BY input_uri, run_id DESC) newest WHERE status = 'verified' ORDER BY run_id",
                (version_id,),
            ).fetchall()
            run_ids = [int(r[0]) for r in rows]
        else:
            states = dict(
                conn.execute(
                    "SELECT run_id, status FROM runs WHERE run_id = ANY(%s) AND version_id = %s",
                    (run_ids, version_id),
                ).fetchall()
            )
            for run_id in run_ids:
                if states.get(run_id) not in runstate.EDGES["published"]:
                    raise RunStateError(
                        f"run {run_id} is {states.get(run_id, 'not a run of ' + model + '/' + version)}; "
                        "only verified or rolled-back runs can be published"
                    )
        check_basis(conn, run_ids=run_ids)
        has_published = conn.execute(
            "SELECT 1 FROM runs WHERE version_id = %s AND publish_id IS NOT NULL LIMIT 1", (version_id,)
        ).fetchone()
        if not run_ids and not has_published:
            raise RunStateError(
                f"{model}/{version} has no verified run to publish; run it first (`predcache run`)"
            )
        current = conn.execute("SELECT version FROM active_versions WHERE model = %s", (model,)).fetchone()
        prev_version = str(current[0]) if current else None
        prow = conn.execute(
            "INSERT INTO publishes (model, prev_version, version, run_ids) VALUES (%s, %s, %s, %s) "
            "RETURNING publish_id",
            (model, prev_version, version, run_ids),
        ).fetchone()
        assert prow is not None
        publish_id = int(prow[0])
        for run_id in run_ids:
            runstate.move(
                conn,
                run_id,
                "published",
                detail=f"publish {publish_id}",
                set_sql="publish_id = %(publish_id)s",
                params={"publish_id": publish_id},
            )
        conn.execute(
            "INSERT INTO active_versions (model, version, version_id, publish_id) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (model) DO UPDATE SET version = EXCLUDED.version, version_id = EXCLUDED.version_id, "
            "publish_id = EXCLUDED.publish_id, updated_at = now()",
            (model, version, version_id, publish_id),
        )
    return PublishResult(publish_id, model, version, prev_version, run_ids)


def rollback(conn: psycopg.Connection[Any], *, model: str) -> RollbackResult:
    """Undo the newest publish of ``model``: its runs become rolled_back and the pointer moves back.

    The pointer goes to the newest publish still standing (none: nothing is active). A
    rolled-back run stays hidden until it is published again by its id.

    Raises:
        RunStateError: nothing to roll back.
    """
    with conn.transaction():
        _lock_model(conn, model)
        row = conn.execute(
            "SELECT publish_id, version, run_ids FROM publishes "
            "WHERE model = %s AND rolled_back_at IS NULL ORDER BY publish_id DESC LIMIT 1",
            (model,),
        ).fetchone()
        if row is None:
            raise RunStateError(f"model {model} has no publish to roll back")
        publish_id, version, run_ids = int(row[0]), str(row[1]), [int(r) for r in row[2]]
        conn.execute("UPDATE publishes SET rolled_back_at = now() WHERE publish_id = %s", (publish_id,))
        still = conn.execute(
            "SELECT run_id FROM runs WHERE publish_id = %s AND status = 'published' ORDER BY run_id",
            (publish_id,),
        ).fetchall()
        for (run_id,) in still:
            runstate.move(
                conn,
                int(run_id),
                "rolled_back",
                detail=f"publish {publish_id} rolled back",
                set_sql="publish_id = NULL",
            )
        back = conn.execute(
            "SELECT p.publish_id, v.version_id, v.version FROM publishes p JOIN model_versions v "
            "ON v.model = p.model AND v.version = p.version "
            "WHERE p.model = %s AND p.rolled_back_at IS NULL ORDER BY p.publish_id DESC LIMIT 1",
            (model,),
        ).fetchone()
        if back is None:
            conn.execute("DELETE FROM active_versions WHERE model = %s", (model,))
            active = None
        else:
            active = str(back[2])
            conn.execute(
                "UPDATE active_versions SET version = %s, version_id = %s, publish_id = %s, "
                "updated_at = now() WHERE model = %s",
                (active, int(back[1]), int(back[0]), model),
            )
    return RollbackResult(publish_id, model, version, run_ids, active)
