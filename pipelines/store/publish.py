"""Publish and rollback: each moves what readers see in one transaction."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

from pipelines.errors import RunStateError


@dataclass(frozen=True)
class PublishResult:
    publish_id: int
    model: str
    version: str
    prev_version: str | None
    run_ids: list[int]


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
        run_ids: verified runs to publish; None publishes every verified run of the version.

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
                "SELECT run_id FROM runs WHERE version_id = %s AND status = 'verified' ORDER BY run_id",
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
                if states.get(run_id) != "verified":
                    raise RunStateError(
                        f"run {run_id} is {states.get(run_id, 'not a run of ' + model + '/' + version)}; "
                        "only verified runs can be published"
                    )
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
        conn.execute(
            "UPDATE runs SET publish_id = %s, status = 'published' WHERE run_id = ANY(%s)",
            (publish_id, run_ids),
        )
        conn.execute(
            "INSERT INTO active_versions (model, version, version_id, publish_id) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (model) DO UPDATE SET version = EXCLUDED.version, version_id = EXCLUDED.version_id, "
            "publish_id = EXCLUDED.publish_id, updated_at = now()",
            (model, version, version_id, publish_id),
        )
    return PublishResult(publish_id, model, version, prev_version, run_ids)


def rollback(conn: psycopg.Connection[Any], *, model: str) -> PublishResult:
    """Undo the newest publish of ``model``: its runs are unpublished and the pointer moves back.

    Raises:
        RunStateError: nothing to roll back.
    """
    with conn.transaction():
        _lock_model(conn, model)
        row = conn.execute(
            "SELECT publish_id, prev_version, version, run_ids FROM publishes "
            "WHERE model = %s AND rolled_back_at IS NULL ORDER BY publish_id DESC LIMIT 1",
            (model,),
        ).fetchone()
        if row is None:
            raise RunStateError(f"model {model} has no publish to roll back")
        publish_id, prev_version, version, run_ids = (
            int(row[0]),
            row[1],
            str(row[2]),
            [int(r) for r in row[3]],
        )
        conn.execute("UPDATE publishes SET rolled_back_at = now() WHERE publish_id = %s", (publish_id,))
        conn.execute(
            "UPDATE runs SET publish_id = NULL, status = 'verified' WHERE publish_id = %s", (publish_id,)
        )
        if prev_version is None:
            conn.execute("DELETE FROM active_versions WHERE model = %s", (model,))
        else:
            # The pointer goes back to the newest publish still standing (the one before this).
            back = conn.execute(
                "SELECT p.publish_id, v.version_id, v.version FROM publishes p JOIN model_versions v "
                "ON v.model = p.model AND v.version = p.version "
                "WHERE p.model = %s AND p.rolled_back_at IS NULL ORDER BY p.publish_id DESC LIMIT 1",
                (model,),
            ).fetchone()
            if back is None:
                raise RunStateError(
                    f"model {model}: the publish before {publish_id} is missing; cannot roll back"
                )
            conn.execute(
                "UPDATE active_versions SET version = %s, version_id = %s, publish_id = %s, "
                "updated_at = now() "
                "WHERE model = %s",
                (str(back[2]), int(back[1]), int(back[0]), model),
            )
    return PublishResult(publish_id, model, str(prev_version) if prev_version else "", version, run_ids)
