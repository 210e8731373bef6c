"""What an incremental run compares with, and the tombstones of ``--prune-missing``.

The basis of an incremental run is the newest published run of the same model version and
signature: its (key hash, input fingerprint) pairs (``run_fingerprints``, see
``core.changes``) say, for each key it stored or carried over, which inputs its current
prediction was computed from. The comparison is only sound while that run is still the newest
published one, so ``publish`` refuses an incremental run whose basis was overtaken
(``check_basis``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import psycopg
import pyarrow as pa
from psycopg import sql
from psycopg.types.json import Jsonb

from pipelines.core.changes import pairs_from_bytes
from pipelines.errors import InputError, RunStateError
from pipelines.store.ledger import partition_name

#: Pairs per stored part of carried-over rows (16 MB): one bytea value stays well under 1 GB.
PART_PAIRS = 1 << 20

_NEWEST_PUBLISHED = (
    "SELECT run_id FROM runs WHERE version_id = %s AND signature = %s AND status = 'published' "
    "ORDER BY publish_id DESC, run_id DESC LIMIT 1"
)


def basis_run(conn: psycopg.Connection[Any], *, version_id: int, signature: str) -> int | None:
    """The run an incremental run of this version compares with (None: every row is scored)."""
    row = conn.execute(_NEWEST_PUBLISHED, (version_id, signature)).fetchone()
    return int(row[0]) if row else None


def load_pairs(conn: psycopg.Connection[Any], run_id: int) -> np.ndarray:
    """Every pair of ``run_id`` (sorted by key hash); empty for a run stored before pairs existed."""
    with conn.cursor(binary=True) as cur:
        parts = cur.execute("SELECT pairs FROM run_fingerprints WHERE run_id = %s", (run_id,)).fetchall()
    return pairs_from_bytes(bytes(part) for (part,) in parts)


def write_pairs(conn: psycopg.Connection[Any], run_id: int, part: str, pairs: np.ndarray) -> None:
    """Store one part of a run's pairs (idempotent per part)."""
    conn.execute(
        "INSERT INTO run_fingerprints (run_id, part, pairs) VALUES (%s, %s, %s) "
        "ON CONFLICT (run_id, part) DO NOTHING",
        (run_id, part, pairs.tobytes()),
    )


def record_plan(
    conn: psycopg.Connection[Any], run_id: int, *, carried: int, input_stats: dict[str, Any] | None
) -> None:
    """Store what an incremental run's planner found: how many pairs it carries over unchanged (they
    are stored by ``write_carried`` while the run scores) and the input statistics it took."""
    conn.execute(
        "UPDATE runs SET pairs_carried_plan = %s, input_stats_plan = %s WHERE run_id = %s",
        (carried, Jsonb(input_stats) if input_stats is not None else None, run_id),
    )


def write_carried(conn: psycopg.Connection[Any], run_id: int, carried: np.ndarray) -> None:
    """Store the pairs a run carries over, in parts named ``carried-N`` (idempotent: a resumed run
    writes the parts an earlier attempt did not; the same sorted pairs give the same parts)."""
    for number, start in enumerate(range(0, len(carried), PART_PAIRS)):
        write_pairs(conn, run_id, f"carried-{number}", carried[start : start + PART_PAIRS])


def check_basis(conn: psycopg.Connection[Any], *, run_ids: list[int]) -> None:
    """Refuse to publish an incremental run whose basis is no longer the newest published run.

    Its unchanged rows rely on the basis's predictions being current: a run published since
    (or a second incremental run published with it) may have replaced some of them.

    Raises:
        RunStateError: the basis was overtaken, rolled back, or shared by two runs of this publish.
    """
    rows = conn.execute(
        "SELECT run_id, version_id, signature, basis_run_id FROM runs "
        "WHERE run_id = ANY(%s) AND incremental AND basis_run_id IS NOT NULL ORDER BY run_id",
        (run_ids,),
    ).fetchall()
    if len(rows) > 1:
        raise RunStateError(
            f"runs {', '.join(str(r[0]) for r in rows)} are incremental runs compared with earlier "
            "publishes; publish them one at a time, each after a new incremental run"
        )
    for run_id, version_id, signature, basis in rows:
        newest = basis_run(conn, version_id=version_id, signature=signature)
        if newest != basis:
            since = f"run {newest} is the newest published run now" if newest else "it was rolled back"
            raise RunStateError(
                f"run {run_id} left out rows unchanged since run {basis}, but {since}; "
                "start a new incremental run (or a full run) and publish that"
            )


def input_schema_text(schema: pa.Schema, columns: list[str]) -> str:
    """The input's key and model columns with their Arrow types, as recorded on each run."""
    return ", ".join(f"{name}: {schema.field(name).type}" for name in columns if name in schema.names)


def check_same_schema(conn: psycopg.Connection[Any], *, version_id: int, schema_text: str) -> None:
    """Refuse an incremental run when the input's schema differs from the last published run's.

    Snapshots usually live at new paths (one folder per day), so the comparison is with the
    newest published run of the version, whatever its input.

    Raises:
        InputError: the newest published run of this version read other column types.
    """
    row = conn.execute(
        "SELECT run_id, input_schema FROM runs WHERE version_id = %s "
        "AND publish_id IS NOT NULL AND input_schema IS NOT NULL ORDER BY publish_id DESC LIMIT 1",
        (version_id,),
    ).fetchone()
    if row is not None and row[1] != schema_text:
        before, now = _columns(row[1]), _columns(schema_text)
        changes = [
            f"{name}: {before.get(name, 'absent')} -> {now.get(name, 'absent')}"
            for name in dict.fromkeys([*before, *now])
            if before.get(name) != now.get(name)
        ]
        raise InputError(
            f"the input's schema changed since run {row[0]} ({', '.join(changes)}); "
            "fingerprints are not comparable: run without --incremental for a full rescoring"
        )


def _columns(schema_text: str) -> dict[str, str]:
    return dict(part.split(": ", 1) for part in schema_text.split(", ") if ": " in part)


def write_tombstones(
    conn: psycopg.Connection[Any],
    *,
    run_id: int,
    version_id: int,
    model: str,
    version: str,
    snapshot_keys: Iterable[pa.Array],
) -> int:
    """Once per run (its own transaction): hide the current keys the snapshot does not contain.

    The tombstones are rows of this run (``pruned``), visible when the run is published, so
    readers lose the missing keys in the same transaction that shows the new predictions.

    Returns:
        How many keys were pruned (0 if the run had pruned already).
    """
    with conn.transaction():
        claimed = conn.execute(
            "UPDATE runs SET rows_pruned = 0 WHERE run_id = %s AND rows_pruned IS NULL", (run_id,)
        )
        if claimed.rowcount == 0:
            return 0
        conn.execute('CREATE TEMP TABLE snapshot_keys (key text COLLATE "C") ON COMMIT DROP')
        with conn.cursor().copy("COPY snapshot_keys (key) FROM STDIN") as copy:
            for chunk in snapshot_keys:
                for key in chunk.drop_null().to_pylist():
                    copy.write_row((key,))
        conn.execute("CREATE INDEX ON snapshot_keys (key)")
        conn.execute("ANALYZE snapshot_keys")
        inserted = conn.execute(
            sql.SQL(
                "INSERT INTO {} (version_id, run_id, key, score, label, input_fp, pruned) "
                "SELECT %s, %s, c.key, 0, NULL, NULL, true FROM predictions_current c "
                "WHERE c.model = %s AND c.version = %s "
                "AND NOT EXISTS (SELECT 1 FROM snapshot_keys s WHERE s.key = c.key)"
            ).format(sql.Identifier(partition_name(version_id))),
            (version_id, run_id, model, version),
        ).rowcount
        conn.execute("UPDATE runs SET rows_pruned = %s WHERE run_id = %s", (inserted, run_id))
    return int(inserted)
