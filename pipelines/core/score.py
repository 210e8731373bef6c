"""Score one shard: validate, run the model in batches, and return rows to store."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from pipelines.core.card import Card
from pipelines.core.fingerprint import input_fingerprint
from pipelines.core.model import Model
from pipelines.core.outputs import encode_outputs, label_values, score_values
from pipelines.core.validate import MAX_KEY_LENGTH, reject_rows, validate

#: What a shard stores per key: the typed score and label, every output as one JSON object
#: text, and the fingerprint of the inputs it was computed from (``core.fingerprint``).
PREDICTION_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("score", pa.float32()),
        ("label", pa.int64()),
        ("outputs", pa.string()),
        ("input_fp", pa.int64()),
    ]
)

#: unchanged(keys, fingerprints) -> bool mask of the rows whose current prediction already
#: has this fingerprint (an incremental run skips them).
UnchangedFn = Callable[[pa.Array, np.ndarray], np.ndarray]


def fingerprint_columns(card: Card) -> list[str]:
    """The columns an input fingerprint covers: the model's input columns in card order (not the key)."""
    return [name for name in card.columns if name != card.key]


@dataclass(frozen=True)
class ShardResult:
    """What one shard produced: predictions (key, score, label, outputs, input_fp) and rejects.

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
    fingerprints: bool = True,
) -> ShardResult:
    """Validate ``table`` against the model's card and score the good rows.

    A row whose score comes out NaN or infinite is rejected with the reason (JSON has no
    such number, and a cached score must be one a reader can use).

    Args:
        shard_id: the shard these rows belong to (carried into the result).
        table: every input row of the shard.
        model: the loaded model (its session is this process's one session).
        batch_rows: rows per onnxruntime call (scores do not depend on it: static int8).
        max_key_length: longer keys are rejected.
        unchanged: for incremental runs, which valid rows to skip (see ``UnchangedFn``).
        fingerprints: compute ``input_fp`` (null when False and ``unchanged`` is None: online
            answers are not stored, and hashing was a fifth of the cost of scoring one row).
    """
    checked = validate(table, model.card, max_key_length=max_key_length)
    good = checked.good
    hashes = None
    if fingerprints or unchanged is not None:
        hashes = input_fingerprint(good, fingerprint_columns(model.card))
    skipped = 0
    if unchanged is not None and hashes is not None and good.num_rows:
        same = np.asarray(unchanged(good.column(model.card.key), hashes), dtype=bool)
        skipped = int(same.sum())
        if skipped:
            good = good.filter(pa.array(~same))
            hashes = hashes[~same]
    outputs = model.predict(good, batch_rows=batch_rows)
    n = good.num_rows
    label = label_values(model.card, outputs)
    score = np.asarray(score_values(model.card, outputs), np.float32)
    predictions = pa.table(
        [
            good.column(model.card.key),
            pa.array(score, pa.float32()),
            pa.array(label, pa.int64()) if label is not None else pa.nulls(n, pa.int64()),
            encode_outputs(model.card, outputs, n),
            pa.array(hashes, pa.int64()) if hashes is not None else pa.nulls(n, pa.int64()),
        ],
        schema=PREDICTION_SCHEMA,
    )
    rejects = checked.rejects
    finite = np.isfinite(score)
    if not finite.all():
        bad = ~finite
        reasons = np.where(
            np.isnan(score[bad]), "model output 'score' is NaN", "model output 'score' is infinite"
        )
        mask = pa.array(bad)
        bad_rows = reject_rows(good.filter(mask), pa.array(reasons, pa.string()), model.card)
        # One chunk: pyarrow's CSV writer emits garbage for a table whose first chunk is empty.
        rejects = pa.concat_tables([rejects, bad_rows]).combine_chunks() if rejects.num_rows else bad_rows
        predictions = predictions.filter(pa.array(finite))
    return ShardResult(
        shard_id=shard_id,
        rows_in=table.num_rows,
        predictions=predictions,
        rejects=rejects,
        rows_unchanged=skipped,
    )
