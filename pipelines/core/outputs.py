"""A model's outputs as the cache stores them: the typed ``score`` and ``label``, and every output as JSON.

Every output of a row goes into one JSON object, output name -> value: a scalar for ``[N]`` and
``[N, 1]`` outputs, a list for ``[N, K]`` ones. Numbers are written in the shortest text that
reads back to the same float32/float64 (Arrow's float formatting), so a reader that parses the
JSON and casts to the output's dtype gets the model's value bit for bit. JSON has no NaN or
infinity: those are written as the strings ``"NaN"``, ``"Infinity"`` and ``"-Infinity"``.

The encoding is vectorized (Arrow compute over whole columns, no per-row Python).

A model whose outputs are exactly the typed columns (a float32 ``score`` output and, if any, an
integer ``label`` output, under those names) stores no JSON: ``outputs`` is NULL and the views
build the object from ``score`` and ``label`` (sql/004_outputs.sql). Measured on 500k
flights_delay rows (PostgreSQL 15, loopback), the jsonb column doubled the COPY time (2.9 s ->
5.8-6.9 s, writer 105k -> 56-64k rows/s) for values the typed columns already hold exactly.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.core.card import Card, OutputSpec
from pipelines.errors import ModelCardError

_NON_FINITE = {"nan": '"NaN"', "inf": '"Infinity"', "-inf": '"-Infinity"'}


def score_values(card: Card, outputs: dict[str, np.ndarray]) -> np.ndarray:
    """The typed ``score`` column (float32) from the outputs, as the card designates it."""
    spec = card.score_spec
    values = outputs[spec.output]
    if values.ndim == 2:
        if spec.index is not None:
            values = values[:, spec.index]
        elif spec.reduce == "max":
            values = values.max(axis=1) if values.shape[0] else values[:, 0]
        else:
            raise ModelCardError(
                f"{card.name}/{card.version}: score output '{spec.output}' has several columns; "
                "the card must name an index or 'max'"
            )
    # A float64 score beyond float32's range is +-inf in the typed column (outputs keep it exactly).
    with np.errstate(over="ignore"):
        return np.asarray(values).astype(np.float32, copy=False)


def label_values(card: Card, outputs: dict[str, np.ndarray]) -> np.ndarray | None:
    """The typed ``label`` column (int64) when the card designates an integer label output."""
    name = card.label_output
    if name is None:
        return None
    return np.asarray(outputs[name]).reshape(-1).astype(np.int64, copy=False)


def _scalar_text(values: np.ndarray, dtype: str) -> pa.Array:
    """One JSON value per element of a 1-D array."""
    if dtype == "string":
        encoded = pc.dictionary_encode(pa.array(values, pa.string()))
        texts = [json.dumps(v) if v is not None else "null" for v in encoded.dictionary.to_pylist()]
        return pa.array(texts, pa.string()).take(encoded.indices)
    if dtype == "bool":
        return pc.if_else(pa.array(values, pa.bool_()), "true", "false")
    if dtype == "float16":
        values = values.astype(np.float32)  # exact; float32 text reads back to the same half
    text = pa.array(values).cast(pa.string())
    if dtype.startswith("float") and not np.isfinite(values).all():
        for raw, replacement in _NON_FINITE.items():
            text = pc.if_else(pc.equal(text, raw), replacement, text)
    return text


def _value_text(spec: OutputSpec, values: np.ndarray) -> pa.Array:
    width = spec.width
    if width is None:
        return _scalar_text(values.reshape(-1), spec.dtype)
    n = values.shape[0]
    flat = _scalar_text(values.reshape(-1), spec.dtype)
    offsets = pa.array(np.arange(0, n * width + 1, width, dtype=np.int32))
    joined = pc.binary_join(pa.ListArray.from_arrays(offsets, flat), ",")
    return pc.binary_join_element_wise("[", joined, "]", "")


def typed_columns_hold_every_output(card: Card) -> bool:
    """True when ``score`` and ``label`` hold every output exactly (then no JSON is stored)."""
    score = card.score_spec
    names = {spec.name for spec in card.outputs}
    if score.output != "score" or score.index is not None or score.reduce is not None:
        return False
    if not names <= {"score", "label"} or card.output("score").dtype != "float32":
        return False
    if "label" in names:
        label = card.output("label")
        return card.label_output == "label" and label.width is None and label.dtype.startswith("int")
    return True


def encode_outputs(card: Card, outputs: dict[str, np.ndarray], rows: int) -> pa.Array:
    """One JSON object text per row holding every output of the card (see the module docstring).

    All null when the typed columns hold every output (``typed_columns_hold_every_output``).
    """
    if rows == 0 or typed_columns_hold_every_output(card):
        return pa.nulls(rows, pa.string())
    parts: list[pa.Array | str] = []
    for position, spec in enumerate(card.outputs):
        parts.append(("{" if position == 0 else ",") + json.dumps(spec.name) + ":")
        parts.append(_value_text(spec, outputs[spec.name]))
    parts.append("}")
    return pc.binary_join_element_wise(*parts, "")


def columns_to_store(predictions: pa.Table) -> pa.Table:
    """The prediction columns a COPY sends: ``outputs`` left out when it is all NULL (the column's
    default), which keeps the reference model's COPY what it was before outputs were stored."""
    if (
        "outputs" in predictions.column_names
        and predictions.column("outputs").null_count == predictions.num_rows
    ):
        return predictions.drop_columns(["outputs"])
    return predictions
