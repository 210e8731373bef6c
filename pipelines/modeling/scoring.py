"""Score many rows in batches and keep, per row, only the figures an import computes from them.

The gate and the reference statistics need each row's score, its label and the class the gate
compares (the label, else the argmax of the score's output). Keeping the graph's full outputs for
every row would grow with rows x output width (a 1,000-class probability output is 4 KB a row);
this keeps one batch of outputs and three numbers per row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from pipelines.core.model import predict_outputs
from pipelines.core.outputs import label_values, score_values

if TYPE_CHECKING:
    import onnxruntime as ort
    import pyarrow as pa

    from pipelines.core.card import Card


@dataclass(frozen=True)
class Scored:
    """Per row: ``score`` (float64), ``label`` (the card's label output, if any) and ``classes``
    (the label, else the argmax of a 2-D score output; None when neither exists)."""

    score: np.ndarray
    label: np.ndarray | None
    classes: np.ndarray | None


def agreeing_classes(card: Card, outputs: dict[str, np.ndarray]) -> np.ndarray | None:
    """The class each row is given: the label output, else the argmax of the score's 2-D output."""
    labels = label_values(card, outputs)
    if labels is not None:
        return labels
    values = outputs[card.score_spec.output]
    return values.argmax(axis=1) if values.ndim == 2 and values.shape[0] else None


def score_rows(session: ort.InferenceSession, card: Card, table: pa.Table, *, batch_rows: int) -> Scored:
    """Score ``table`` (valid rows, coerced) with ``session`` ``batch_rows`` rows at a time.

    Each batch is scored exactly as ``predict_outputs`` scores it over the whole table (same
    slices, same padding), so the figures are bit for bit those of scoring everything at once.
    """
    scores: list[np.ndarray] = []
    labels: list[np.ndarray | None] = []
    classes: list[np.ndarray | None] = []
    for start in range(0, table.num_rows, batch_rows):
        outputs = predict_outputs(session, card, table.slice(start, batch_rows), batch_rows=batch_rows)
        scores.append(score_values(card, outputs).astype(np.float64))
        labels.append(label_values(card, outputs))
        classes.append(agreeing_classes(card, outputs))
    score = np.concatenate(scores) if scores else np.empty(0)
    return Scored(score=score, label=_joined(labels), classes=_joined(classes))


def _joined(parts: list[np.ndarray | None]) -> np.ndarray | None:
    """The batches' arrays end to end; None when there are none or a batch had none."""
    present = [part for part in parts if part is not None]
    return np.concatenate(present) if present and len(present) == len(parts) else None
