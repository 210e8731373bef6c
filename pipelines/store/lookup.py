"""Key lookup: the same query the CLI and the API use, over ``predictions_current``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

LOOKUP_SQL = (
    "SELECT key, score, label, version, computed_at, run_id, outputs FROM predictions_current "
    "WHERE model = %s AND key = ANY(%s)"
)


@dataclass(frozen=True)
class Prediction:
    key: str
    found: bool
    model: str
    score: float | None = None
    label: int | None = None
    version: str | None = None
    computed_at: datetime | None = None
    run_id: int | None = None
    #: Every output of the model: name -> scalar or list (see pipelines.core.outputs).
    outputs: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "found": self.found,
            "model": self.model,
            "score": self.score,
            "label": self.label,
            "version": self.version,
            "computed_at": self.computed_at.isoformat() if self.computed_at else None,
            "run_id": self.run_id,
            "outputs": self.outputs,
        }


def lookup(conn: psycopg.Connection[Any], model: str, keys: list[str]) -> list[Prediction]:
    """Current predictions for ``keys`` in request order (found=False where none is visible)."""
    rows = conn.execute(LOOKUP_SQL, (model, keys)).fetchall()
    by_key = {row[0]: row for row in rows}
    out = []
    for key in keys:
        row = by_key.get(key)
        if row is None:
            out.append(Prediction(key=key, found=False, model=model))
        else:
            out.append(
                Prediction(
                    key=key,
                    found=True,
                    model=model,
                    score=float(row[1]),
                    label=None if row[2] is None else int(row[2]),
                    version=str(row[3]),
                    computed_at=row[4],
                    run_id=int(row[5]),
                    outputs=row[6],
                )
            )
    return out


def active_versions(conn: psycopg.Connection[Any]) -> dict[str, str]:
    """Model -> its active (published) version, for every model the cache serves."""
    return dict(conn.execute("SELECT model, version FROM active_versions ORDER BY model").fetchall())
