"""A model's outputs as the cache stores them: the typed ``score`` and ``label``, and every output as JSON.

Every output of a row goes into one JSON object, output name -> value: a scalar for ``[N]`` and
``[N, 1]`` outputs, a list for ``[N, K]`` ones. Numbers are written in the shortest text that
reads back to the same float32/float64 (Arrow's float formatting), so a reader that parses the
JSON and casts to the output's dtype gets the model's value bit for bit. JSON has no NaN or
infinity: those are written as the strings ``"NaN"``, ``"Infinity"`` and ``"-Infinity"``.

The encoding is vectorized (Arrow compute over whole columns, no per-row Python): measured with
two ``[N, 10]`` outputs it stays far below the cost of the COPY that stores it (benchmarks/).
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


def encode_outputs(card: Card, outputs: dict[str, np.ndarray], rows: int) -> pa.Array:
    """One JSON object text per row holding every output of the card (see the module docstring)."""
    if rows == 0:
        return pa.array([], pa.string())
    parts: list[pa.Array | str] = []
    for position, spec in enumerate(card.outputs):
        parts.append(("{" if position == 0 else ",") + json.dumps(spec.name) + ":")
        parts.append(_value_text(spec, outputs[spec.name]))
    parts.append("}")
    return pc.binary_join_element_wise(*parts, "")

