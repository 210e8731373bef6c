"""What an incremental run compares against, and the tombstones of ``--prune-missing``.

A row is skipped when its key's current prediction (``predictions_current``: the newest
published row of the model's active version) was computed by the same model version from
inputs with the same fingerprint. Reading through the view keeps one definition of "current"
for lookups and for incremental runs (rollbacks and tombstones included).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import psycopg
import pyarrow as pa
from psycopg import sql

from pipelines.errors import InputError
from pipelines.store.ledger import partition_name

CURRENT_FINGERPRINTS_SQL = (
    "SELECT key, input_fp FROM predictions_current WHERE model = %s AND version = %s AND key = ANY(%s)"
)


def unchanged_rows(
    conn: psycopg.Connection[Any], *, model: str, version: str, keys: pa.Array, fingerprints: np.ndarray
) -> np.ndarray:
    """Bool mask: the key's current prediction is of ``version`` and has the same input fingerprint."""
    key_list = keys.to_pylist()
    current = dict(conn.execute(CURRENT_FINGERPRINTS_SQL, (model, version, key_list)).fetchall())
    # A row stored before fingerprints existed has none: it never counts as unchanged.
    return np.fromiter(
        (current.get(k) == fp for k, fp in zip(key_list, fingerprints.tolist(), strict=True)),
        dtype=bool,
        count=len(key_list),
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
