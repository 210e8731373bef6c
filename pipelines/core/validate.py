"""Input checks: schema errors stop a run up front; bad rows become rejects with a reason.

Schema level (the whole input is unusable, one clear error): the key column or a model
input column is missing, the key is not a string, int32 or int64 column, or a column's type
cannot be coerced to the card's dtype without loss (a string where a number is expected, a
float where an integer is expected; integers to float are accepted), or a list column of the
wrong fixed size.

Row level (the row is rejected, the run goes on): a key that breaks the key rule
(``core.keyrule``: null, empty, invalid UTF-8, control characters, surrounding white space,
characters outside the key alphabet, over-long), a key that occurs more than once in the
input (every occurrence is rejected: we cannot know which one is right), a null or NaN
feature, a float that does not fit float32, a string feature that is not valid UTF-8, a list
feature that does not hold exactly K values or holds a bad value. Integer keys become their
decimal text. Rejected rows are rendered so that any value can be stored (``keyrule.display``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.core.card import Card, InputSpec
from pipelines.core.keyrule import MAX_KEY_LENGTH, display, key_reasons
from pipelines.core.model import arrow_type
from pipelines.errors import InputError

__all__ = [
    "MAX_KEY_LENGTH",
    "REJECT_SCHEMA",
    "Validated",
    "check_schema",
    "coerce",
    "good_rows",
    "reject_rows",
    "validate",
]
REJECT_SCHEMA = pa.schema([("key", pa.string()), ("reason", pa.string()), ("row", pa.string())])
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _coercible(source: pa.DataType, dtype: str) -> bool:
    """True when ``source`` converts to the card dtype without loss of meaning."""
    if pa.types.is_dictionary(source):
        source = source.value_type
    if dtype == "string":
        return pa.types.is_string(source) or pa.types.is_large_string(source)
    if dtype == "bool":
        return pa.types.is_boolean(source)
    if dtype == "int64":
        return pa.types.is_integer(source) and not pa.types.is_uint64(source)
    if dtype == "int32":
        return source in _INT32_SOURCES
    return pa.types.is_floating(source) or pa.types.is_integer(source) or pa.types.is_decimal(source)


_INT32_SOURCES = {pa.int8(), pa.int16(), pa.int32(), pa.uint8(), pa.uint16()}
_KEY_TYPES = "string, int32 or int64"


def _is_key_type(source: pa.DataType) -> bool:
    if pa.types.is_dictionary(source):
        source = source.value_type
    return source in (pa.string(), pa.large_string(), pa.int32(), pa.int64())


def _list_value_type(source: pa.DataType) -> pa.DataType | None:
    if pa.types.is_list(source) or pa.types.is_large_list(source) or pa.types.is_fixed_size_list(source):
        return source.value_type
    return None


def check_schema(schema: pa.Schema, card: Card, *, source: str = "input") -> None:
    """Raise InputError unless ``schema`` has the key and every input column, with coercible types."""
    names = set(schema.names)
    if card.key not in names:
        raise InputError(
            f"{source} has no key column '{card.key}' (model {card.name} needs it); "
            f"columns present: {', '.join(schema.names[:12])}"
        )
    key_type = schema.field(card.key).type
    if not _is_key_type(key_type):
        raise InputError(
            f"{source}: key column '{card.key}' has type {key_type}; it must be {_KEY_TYPES} "
            "(integer keys are stored as their decimal text)"
        )
    missing = [column for column in card.columns if column not in names]
    if missing:
        raise InputError(f"{source} lacks model input column(s) {', '.join(missing)} needed by {card.name}")
    for spec in card.inputs:
        for column in spec.source_columns:
            actual = schema.field(column).type
            if spec.is_list:
                _check_list_column(actual, spec, source=source, model=card.name)
            elif not _coercible(actual, spec.dtype):
                raise InputError(
                    f"{source}: column '{column}' has type {actual}, model {card.name} expects {spec.dtype}; "
                    "fix the input's type (predcache converts only without loss of meaning)"
                )


def _check_list_column(actual: pa.DataType, spec: InputSpec, *, source: str, model: str) -> None:
    value_type = _list_value_type(actual)
    width = spec.width
    if value_type is None or not _coercible(value_type, spec.dtype):
        raise InputError(
            f"{source}: column '{spec.name}' has type {actual}, model {model} expects a list of {width} "
            f"{spec.dtype} values (or name scalar columns to stack with --columns when importing)"
        )
    if pa.types.is_fixed_size_list(actual) and actual.list_size != width:
        raise InputError(
            f"{source}: column '{spec.name}' holds lists of {actual.list_size} values, model {model} "
            f"expects {width}"
        )


@dataclass(frozen=True)
class Validated:
    """Rows ready to score (key + inputs in card dtypes) and rejected rows with reasons."""

    good: pa.Table
    rejects: pa.Table


def _first_reason(current: pa.Array, mask: pa.Array, reason: str) -> pa.Array:
    """Keep an existing reason, else set ``reason`` where ``mask`` is true."""
    return pc.if_else(pc.and_(pc.is_null(current), pc.fill_null(mask, False)), reason, current)


def _clean_json_value(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else str(value)
    if isinstance(value, bytes | str):
        return display(value)
    return value


def _as_python(column: pa.Array) -> list[object]:
    """Values of a column; strings as bytes (they may hold invalid UTF-8, which to_pylist refuses)."""
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        column = column.cast(pa.large_binary())
    return column.to_pylist()


def _invalid_utf8(column: pa.Array) -> pa.Array | None:
    """Per row: is the string not valid UTF-8? None when the whole column is valid (the usual case)."""
    try:
        column.validate(full=True)
        return None
    except pa.ArrowInvalid:
        pass
    return pa.array([_undecodable(v) for v in column.cast(pa.large_binary()).to_pylist()], pa.bool_())


def _undecodable(value: bytes | None) -> bool:
    if value is None:
        return False
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def _column(table: pa.Table, name: str) -> pa.Array:
    column = table.column(name)
    return column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)


def reject_rows(table: pa.Table, reasons: pa.Array, card: Card) -> pa.Table:
    """Rejected rows as (key, reason, row JSON), every string safe to store (see ``keyrule.display``)."""
    columns = [card.key, *[c for c in card.columns if c != card.key and c in table.column_names]]
    values = {name: _as_python(_column(table, name)) for name in columns}
    encoded = [
        json.dumps({name: _clean_json_value(values[name][i]) for name in columns}, default=str)
        for i in range(table.num_rows)
    ]
    keys = [display(k) for k in values[card.key]]  # type: ignore[arg-type]
    return pa.table(
        [pa.array(keys, pa.string()), reasons.cast(pa.string()), pa.array(encoded, pa.string())],
        schema=REJECT_SCHEMA,
    )


def _all_finite_float32(column: pa.Array) -> bool:
    """True when every value of a float column is finite and within float32's range (nulls aside)."""
    values = column.to_numpy(zero_copy_only=False)  # nulls read as NaN: they take the full check
    with np.errstate(invalid="ignore"):
        return bool(np.all(np.abs(values) <= _FLOAT32_MAX))


def _scalar_reasons(reasons: pa.Array, column: pa.Array, name: str, dtype: str) -> pa.Array:
    """Null, NaN, infinite and (for float32) too-large values of one scalar column.

    A check that cannot find anything is skipped (no nulls; floats all finite and within
    float32's range): a clean column costs one pass, not a dozen Arrow calls, which is most of
    the fixed cost of validating a handful of rows online. Skipping changes no reason.
    """
    if column.null_count:
        reasons = _first_reason(reasons, pc.is_null(column), f"feature '{name}' is null")
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        invalid = _invalid_utf8(column)
        if invalid is not None:
            reasons = _first_reason(reasons, invalid, f"feature '{name}' is not valid UTF-8")
    if pa.types.is_floating(column.type) and not _all_finite_float32(column):
        reasons = _first_reason(reasons, pc.is_nan(column), f"feature '{name}' is NaN")
        if dtype in ("float32", "float64"):
            if dtype == "float32":
                too_big = pc.and_(pc.is_finite(column), pc.greater(pc.abs(column), _FLOAT32_MAX))
                reasons = _first_reason(reasons, too_big, f"feature '{name}' does not fit float32")
            reasons = _first_reason(reasons, pc.is_inf(column), f"feature '{name}' is infinite")
    return reasons


def _cast(column: pa.Array, dtype: str) -> pa.Array:
    target = arrow_type(dtype)
    if column.type == target:  # nothing to convert (a cast call costs ~15 us even then)
        return column
    # float64 -> float32 rounds (values out of range were rejected above); every other cast is exact.
    return column.cast(target, safe=False) if dtype == "float32" else column.cast(target)


def _cast_list(column: pa.Array, spec: InputSpec) -> pa.Array:
    return column.cast(pa.list_(arrow_type(spec.dtype)), safe=spec.dtype != "float32")


def coerce(table: pa.Table, card: Card) -> pa.Table:
    """The key (as text) and the model's input columns converted exactly as ``validate`` converts them.

    No row is checked: a value ``validate`` would reject comes out as whatever the cast makes of
    it (a null stays null, a float too large for float32 becomes infinite). Incremental runs use
    it to fingerprint rows cheaply; a stored prediction's fingerprint always comes from a valid
    row, so a row ``validate`` would reject never matches one.

    Raises:
        pa.ArrowInvalid: an exact cast met a value it cannot convert (such rows are invalid).
    """
    columns: dict[str, pa.Array] = {card.key: _column(table, card.key).cast(pa.string())}
    for spec, name, column in _input_columns(table, card):
        columns[name] = _cast_list(column, spec) if spec.is_list else _cast(column, spec.dtype)
    return pa.table(columns)


def _input_columns(table: pa.Table, card: Card) -> Iterator[tuple[InputSpec, str, pa.Array]]:
    """Each model input column once (not the key), dictionary-encoded ones decoded."""
    seen = {card.key}
    for spec in card.inputs:
        for name in spec.source_columns:
            if name in seen:
                continue
            seen.add(name)
            column = _column(table, name)
            if pa.types.is_dictionary(column.type):
                column = column.cast(column.type.value_type)
            yield spec, name, column


def _list_reasons(reasons: pa.Array, column: pa.Array, spec: InputSpec) -> tuple[pa.Array, pa.Array]:
    """Reasons for a list column (null, wrong length, bad element) and the column coerced."""
    n = len(column)
    width = spec.width or 1
    reasons = _first_reason(reasons, pc.is_null(column), f"feature '{spec.name}' is null")
    lengths = pc.fill_null(pc.list_value_length(column), width)
    reasons = _first_reason(
        reasons, pc.not_equal(lengths, width), f"feature '{spec.name}' does not hold exactly {width} values"
    )
    flat = pc.list_flatten(column)
    if len(flat):
        element_reasons = _scalar_reasons(pa.nulls(len(flat), pa.string()), flat, spec.name, spec.dtype)
        bad = pc.is_valid(element_reasons).to_numpy(zero_copy_only=False)
        if bad.any():
            parents = pc.list_parent_indices(column).to_numpy()
            mask = np.zeros(n, dtype=bool)
            mask[parents[bad]] = True
            reasons = _first_reason(
                reasons, pa.array(mask), f"feature '{spec.name}' has a null, NaN or out-of-range value"
            )
    return reasons, _cast_list(column, spec)


def validate(table: pa.Table, card: Card, *, max_key_length: int = MAX_KEY_LENGTH) -> Validated:
    """Split rows into good (coerced to the card's dtypes) and rejects (with a reason each).

    Args:
        table: input rows; must pass ``check_schema``.
        card: the model card.
        max_key_length: longer keys are rejected.

    Returns:
        Validated rows; ``good.num_rows + rejects.num_rows == table.num_rows``.
    """
    out, reasons = _checked(table, card, max_key_length=max_key_length)
    if reasons.null_count == table.num_rows:  # no row has a reason
        return Validated(good=out, rejects=REJECT_SCHEMA.empty_table())
    bad = pc.is_valid(reasons)
    rejects = reject_rows(table.filter(bad), reasons.filter(bad), card)
    return Validated(good=out.filter(pc.invert(bad)), rejects=rejects)


def good_rows(table: pa.Table, card: Card, *, max_key_length: int = MAX_KEY_LENGTH) -> pa.Table:
    """``validate(...).good`` without rendering the rejects (for statistics of what a run scores)."""
    out, reasons = _checked(table, card, max_key_length=max_key_length)
    return out if reasons.null_count == table.num_rows else out.filter(pc.is_null(reasons))


def _checked(table: pa.Table, card: Card, *, max_key_length: int) -> tuple[pa.Table, pa.Array]:
    """Every row coerced, and its reject reason (null: the row is good)."""
    check_schema(table.schema, card)
    n = table.num_rows
    keys = _column(table, card.key).cast(pa.string())
    reasons: pa.Array = key_reasons(keys, max_length=max_key_length)
    # Distinct keys (the usual case) need no count per key: one hash pass, not a group_by.
    if n and len(pc.unique(keys)) < n:
        counts = pa.table({"k": keys}).group_by("k").aggregate([("k", "count")])
        dup_keys = counts.filter(pc.greater(counts["k_count"], 1))["k"]
        if len(dup_keys):
            reasons = _first_reason(
                reasons, pc.is_in(keys, dup_keys), "duplicate key: it occurs more than once"
            )

    coerced: dict[str, pa.Array] = {card.key: keys}
    for spec, name, column in _input_columns(table, card):
        if spec.is_list:
            reasons, coerced[name] = _list_reasons(reasons, column, spec)
        else:
            reasons = _scalar_reasons(reasons, column, name, spec.dtype)
            coerced[name] = _cast(column, spec.dtype)
    return pa.table(coerced), reasons
