"""The input fingerprint of a row: a stable 64-bit hash of what the model is fed.

Definition (reproducible by any engine): Spark's ``xxhash64(c1, c2, ..., cN)`` with seed 42
over the row's model inputs in card order, after validation has coerced them to the card's
types. That is XXH64 chained over the columns: the seed of column i+1 is the hash after
column i, each value hashed as its little-endian bytes -- int32 and bool (1/0) as 4 bytes,
int64 as 8, float32 as its IEEE-754 bits in 4 bytes and float64 in 8 (``-0.0`` counted as
``0.0``), strings as their UTF-8 bytes, lists element by element; a null leaves the hash as
it is. Read as a signed 64-bit integer. An incremental run rescores a key only when this
differs from the one stored with the key's current prediction.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.core.card import Card
from pipelines.core.keys import HASH_SEED, hash_bytes, hash_rows

_U = np.uint64


def fingerprint_columns(card: Card) -> list[str]:
    """The columns an input fingerprint covers: the model's input columns in card order (not the key)."""
    return [name for name in card.columns if name != card.key]


def _combine(arr: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(arr, pa.ChunkedArray):
        return arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0)
    return arr


def _fixed_bytes(values: pa.Array) -> np.ndarray:
    """An (n, width) uint8 matrix of each value's little-endian bytes (Spark's hashInt/hashLong input)."""
    kind = values.type
    if pa.types.is_boolean(kind):
        ints = values.to_numpy(zero_copy_only=False).astype("<i4")
    elif pa.types.is_float32(kind):
        floats = values.to_numpy(zero_copy_only=False).astype("<f4")
        ints = np.where(floats == 0.0, np.float32(0.0), floats).view("<i4")
    elif pa.types.is_float64(kind):
        floats = values.to_numpy(zero_copy_only=False).astype("<f8")
        ints = np.where(floats == 0.0, 0.0, floats).view("<i8")
    elif pa.types.is_integer(kind):
        ints = values.to_numpy(zero_copy_only=False)
        # Spark hashes byte, short and int as 4-byte ints, long as 8.
        ints = ints.astype("<i8") if ints.dtype.itemsize == 8 else ints.astype("<i4")
    else:
        raise TypeError(f"no fingerprint encoding for Arrow type {kind}")
    ints = np.ascontiguousarray(ints)
    return ints.view(np.uint8).reshape(len(ints), ints.dtype.itemsize)


def _chain(values: pa.Array, seeds: np.ndarray) -> np.ndarray:
    """Hash ``values`` with one seed per row; nulls keep their seed."""
    kind = values.type
    if pa.types.is_dictionary(kind):
        values = values.cast(kind.value_type)
        kind = values.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_binary(kind):
        return hash_bytes(values, seeds)
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        return _chain_lists(values, seeds)
    valid = pc.is_valid(values).to_numpy(zero_copy_only=False)
    out = seeds.copy()
    if valid.all():
        return hash_rows(_fixed_bytes(values), seeds)
    rows = np.flatnonzero(valid)
    out[rows] = hash_rows(_fixed_bytes(values.filter(pa.array(valid))), seeds[rows])
    return out


def _chain_lists(values: pa.Array, seeds: np.ndarray) -> np.ndarray:
    lengths = pc.fill_null(pc.list_value_length(values), 0).to_numpy(zero_copy_only=False)
    out = seeds.copy()
    for j in range(int(lengths.max()) if len(lengths) else 0):
        rows = np.flatnonzero(lengths > j)
        element = pc.list_element(values.take(pa.array(rows)), j)
        out[rows] = _chain(element, out[rows])
    return out


def input_fingerprint(table: pa.Table, columns: list[str], *, seed: int = HASH_SEED) -> np.ndarray:
    """The fingerprint (see module docstring) of every row of ``table`` over ``columns``, as int64."""
    hashes = np.full(table.num_rows, seed, dtype=_U)
    for name in columns:
        hashes = _chain(_combine(table.column(name)), hashes)
    return hashes.view(np.int64)
