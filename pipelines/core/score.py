"""Score one shard: validate, run the model in batches, and return rows to store."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from pipelines.core.fingerprint import fingerprint_columns, input_fingerprint
from pipelines.core.model import Model
from pipelines.core.outputs import encode_outputs, label_values, score_values
from pipelines.core.stats import shard_stats
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


@dataclass(frozen=True)
class ShardResult:
    """What one shard produced: predictions (key, score, label, outputs, input_fp) and rejects.

    ``rows_in == rows_out + rows_rejected`` (an incremental run's unchanged rows never reach a
    shard: the planner leaves them out, see ``core.changes``).
    """

    shard_id: str
    rows_in: int
    predictions: pa.Table
    rejects: pa.Table
    #: The shard's share of the run's statistics (``core.stats.shard_stats``), or None.
    stats: dict[str, Any] | None = None

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
    fingerprints: bool = True,
    statistics: bool = True,
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
        fingerprints: compute ``input_fp`` (null when False: online answers are not stored, and
            hashing was a fifth of the cost of scoring one row).
        statistics: take the shard's input and output statistics (``observe`` adds them up
            instead of reading the run's input and predictions again).
    """
    checked = validate(table, model.card, max_key_length=max_key_length)
    good = checked.good
    hashes = input_fingerprint(good, fingerprint_columns(model.card)) if fingerprints else None
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
        stats=shard_stats(good, predictions, model.card) if statistics else None,
    )
