"""Stable 64-bit key hash, vectorized over Arrow string arrays.

The hash of a key is XXH64 (the reference xxHash 64-bit algorithm) of the key's UTF-8 bytes
with seed 42, read as a *signed* 64-bit integer. That is exactly Spark's built-in
``xxhash64(col)`` for a string column, so any engine can reproduce it natively, and the
``xxhash`` package (``xxh64_intdigest(key.encode(), seed=42)``, then two's complement) is
an independent reference. A null key hashes to 0 (and is rejected by validation).

The hashing runs in a small C extension (``core/_xxh64.c``, built by setup.py) over the
Arrow buffers. Without it (a checkout nobody built), the same numbers come from numpy: keys
grouped by byte length, the XXH64 rounds run on whole columns (about 10x slower).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

try:
    from pipelines.core import _xxh64 as native
except ImportError:  # pragma: no cover - the extension is built by every install
    native = None  # type: ignore[assignment]

HASH_SEED = 42
NULL_KEY_HASH = 0
_MASK = (1 << 64) - 1
_P1 = 11400714785074694791
_P2 = 14029467366897019727
_P3 = 1609587929392839161
_P4 = 9650029242287828579
_P5 = 2870177450012600261
_U = np.uint64


def _rotl(x: np.ndarray, r: int) -> np.ndarray:
    return (x << _U(r)) | (x >> _U(64 - r))


def _round(acc: np.ndarray, lane: np.ndarray) -> np.ndarray:
    acc = acc + lane * _U(_P2)
    return _rotl(acc, 31) * _U(_P1)


def _lanes64(block: np.ndarray, start: int) -> np.ndarray:
    return np.ascontiguousarray(block[:, start : start + 8]).view("<u8").reshape(-1)


def _xxh64_fixed_length(block: np.ndarray, seed: int | np.ndarray) -> np.ndarray:
    """XXH64 of every row of ``block`` (an (n, L) uint8 matrix of equal-length inputs).

    ``seed`` is one seed for every row, or a uint64 array with one seed per row (chained
    hashes, as Spark's multi-column ``xxhash64``).
    """
    n, length = block.shape
    seeds = np.full(n, seed & _MASK, dtype=_U) if isinstance(seed, int) else np.asarray(seed, dtype=_U)
    pos = 0
    if length >= 32:
        v1 = seeds + _U(_P1) + _U(_P2)
        v2 = seeds + _U(_P2)
        v3 = seeds.copy()
        v4 = seeds - _U(_P1)
        while pos + 32 <= length:
            v1 = _round(v1, _lanes64(block, pos))
            v2 = _round(v2, _lanes64(block, pos + 8))
            v3 = _round(v3, _lanes64(block, pos + 16))
            v4 = _round(v4, _lanes64(block, pos + 24))
            pos += 32
        h = _rotl(v1, 1) + _rotl(v2, 7) + _rotl(v3, 12) + _rotl(v4, 18)
        for v in (v1, v2, v3, v4):
            h = (h ^ _round(np.zeros(n, dtype=_U), v)) * _U(_P1) + _U(_P4)
    else:
        h = seeds + _U(_P5)
    h = h + _U(length)
    while pos + 8 <= length:
        h = h ^ _round(np.zeros(n, dtype=_U), _lanes64(block, pos))
        h = _rotl(h, 27) * _U(_P1) + _U(_P4)
        pos += 8
    if pos + 4 <= length:
        lane32 = np.ascontiguousarray(block[:, pos : pos + 4]).view("<u4").reshape(-1).astype(_U)
        h = h ^ (lane32 * _U(_P1))
        h = _rotl(h, 23) * _U(_P2) + _U(_P3)
        pos += 4
    while pos < length:
        h = h ^ (block[:, pos].astype(_U) * _U(_P5))
        h = _rotl(h, 11) * _U(_P1)
        pos += 1
    h = h ^ (h >> _U(33))
    h = h * _U(_P2)
    h = h ^ (h >> _U(29))
    h = h * _U(_P3)
    return h ^ (h >> _U(32))


def hash_rows(block: np.ndarray, seeds: np.ndarray, *, use_native: bool = True) -> np.ndarray:
    """XXH64 of every row of ``block`` (an (n, width) uint8 matrix) with one uint64 seed per row."""
    if native is not None and use_native:
        out = np.array(seeds, dtype=_U, copy=True)
        native.hash_fixed(np.ascontiguousarray(block), block.shape[1], None, out)
        return out
    return _xxh64_fixed_length(block, np.asarray(seeds, dtype=_U))


def hash_bytes(values: pa.Array, seeds: np.ndarray, *, use_native: bool = True) -> np.ndarray:
    """XXH64 of each value's bytes (string or binary array) with one uint64 seed per row; a null
    keeps its seed."""
    n = len(values)
    large = pa.types.is_large_string(values.type) or pa.types.is_large_binary(values.type)
    _, offsets_buf, data_buf = values.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int64 if large else np.int32)[
        values.offset : values.offset + n + 1
    ]
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    valid = None if values.null_count == 0 else pc.is_valid(values).to_numpy(zero_copy_only=False)
    out = np.array(seeds, dtype=_U, copy=True)
    if native is not None and use_native:
        native.hash_var(data, offsets, valid, out)
        return out
    offsets = offsets.astype(np.int64)
    lengths = np.diff(offsets)
    valid = np.ones(n, dtype=bool) if valid is None else valid
    for length in np.unique(lengths[valid]):
        rows = np.flatnonzero(valid & (lengths == length))
        if length:
            # Row gather of L-byte windows (one memcpy per value), not an (n, L) index matrix.
            block = np.lib.stride_tricks.sliding_window_view(data, int(length))[offsets[rows]]
        else:
            block = np.zeros((len(rows), 0), np.uint8)
        out[rows] = _xxh64_fixed_length(block, out[rows])
    return out


def key_hash(keys: pa.Array | pa.ChunkedArray, *, seed: int = HASH_SEED) -> np.ndarray:
    """Signed 64-bit XXH64 of each key (see module docstring); null keys give 0.

    Args:
        keys: string (or large_string) keys.
        seed: XXH64 seed; 42 matches Spark's ``xxhash64``.

    Returns:
        int64 array, one hash per key, in input order.
    """
    if isinstance(keys, pa.ChunkedArray):
        keys = keys.combine_chunks() if keys.num_chunks != 1 else keys.chunk(0)
    if not (pa.types.is_string(keys.type) or pa.types.is_large_string(keys.type)):
        keys = keys.cast(pa.string())
    hashes = hash_bytes(keys, np.full(len(keys), seed & _MASK, dtype=_U))
    if keys.null_count:
        hashes[pc.is_null(keys).to_numpy(zero_copy_only=False)] = NULL_KEY_HASH
    return hashes.view(np.int64)
