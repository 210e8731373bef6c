"""Score one shard: validate, run the model in batches, and return rows to store."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from pipelines.core.card import Card
from pipelines.core.fingerprint import input_fingerprint
from pipelines.core.model import Model
from pipelines.core.validate import MAX_KEY_LENGTH, validate

PREDICTION_SCHEMA = pa.schema(
    [("key", pa.string()), ("score", pa.float32()), ("label", pa.int64()), ("input_fp", pa.int64())]
)

#: unchanged(keys, fingerprints) -> bool mask of the rows whose current prediction already
#: has this fingerprint (an incremental run skips them).
UnchangedFn = Callable[[pa.Array, np.ndarray], np.ndarray]


def fingerprint_columns(card: Card) -> list[str]:
    """The columns an input fingerprint covers: the model's inputs in card order (not the key)."""
    return [name for name in card.input_names if name != card.key]


@dataclass(frozen=True)
class ShardResult:
    """What one shard produced: predictions (key, score, label, input_fp) and rejects (key, reason, row).

    ``rows_in == rows_out + rows_rejected + rows_unchanged`` (unchanged: skipped by an
    incremental run because the key's current prediction was made from the same inputs).
    """

    shard_id: str
    rows_in: int
    predictions: pa.Table
    rejects: pa.Table
    rows_unchanged: int = 0

    @property
    def rows_out(self) -> int:
        return self.predictions.num_rows

    @property
    def rows_rejected(self) -> int:
        return self.rejects.num_rows


def score_table(
    shard_id: str,
    table: pa.Table,
    model: Model,
    *,
    batch_rows: int,
    max_key_length: int = MAX_KEY_LENGTH,
    unchanged: UnchangedFn | None = None,
) -> ShardResult:
    """Validate ``table`` against the model's card and score the good rows.

    Args:
        shard_id: the shard these rows belong to (carried into the result).
        table: every input row of the shard.
        model: the loaded model (its session is this process's one session).
        batch_rows: rows per onnxruntime call (scores do not depend on it: static int8).
        max_key_length: longer keys are rejected.
        unchanged: for incremental runs, which valid rows to skip (see ``UnchangedFn``).
    """
    checked = validate(table, model.card, max_key_length=max_key_length)
    good = checked.good
    fingerprints = input_fingerprint(good, fingerprint_columns(model.card))
    skipped = 0
    if unchanged is not None and good.num_rows:
        same = np.asarray(unchanged(good.column(model.card.key), fingerprints), dtype=bool)
        skipped = int(same.sum())
        if skipped:
            good = good.filter(pa.array(~same))
            fingerprints = fingerprints[~same]
    outputs = model.predict(good, batch_rows=batch_rows)
    n = good.num_rows
    label = outputs.get("label")
    predictions = pa.table(
        [
            good.column(model.card.key),
            pa.array(outputs["score"], pa.float32()),
            pa.array(label, pa.int64()) if label is not None else pa.nulls(n, pa.int64()),
            pa.array(fingerprints, pa.int64()),
        ],
        schema=PREDICTION_SCHEMA,
    )
    return ShardResult(
        shard_id=shard_id,
        rows_in=table.num_rows,
        predictions=predictions,
        rejects=checked.rejects,
        rows_unchanged=skipped,
    )
