"""The C extension (core/_xxh64.c) and the numpy fallback compute the same XXH64 numbers."""

from __future__ import annotations

import random
import string

import numpy as np
import pyarrow as pa
import pytest
import xxhash

from pipelines.core import keys
from pipelines.core.keys import hash_bytes, hash_rows

pytestmark = pytest.mark.skipif(keys.native is None, reason="the C extension is not built (pip install -e .)")


def _strings(count: int, seed: int) -> list[str | None]:
    rng = random.Random(seed)
    values: list[str | None] = ["", "a", "é€😀", "x" * 31, "y" * 32, "z" * 33, "w" * 100, None]
    values += ["".join(rng.choice(string.printable) for _ in range(rng.randint(0, 90))) for _ in range(count)]
    return values


def _seeds(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2**64, count, dtype=np.uint64)


def test_native_and_numpy_hash_bytes_agree_with_per_row_seeds_nulls_and_slices() -> None:
    values = _strings(700, 1)
    for array in (pa.array(values), pa.array(values, pa.large_string()), pa.array(values).slice(5, 400)):
        seeds = _seeds(len(array), 2)
        native = hash_bytes(array, seeds)
        assert np.array_equal(native, hash_bytes(array, seeds, use_native=False))
        for value, seed, got in zip(array.to_pylist(), seeds.tolist(), native.tolist(), strict=True):
            expected = seed if value is None else xxhash.xxh64_intdigest(value.encode(), seed=seed)
            assert got == expected


@pytest.mark.parametrize("width", [1, 4, 8, 16, 32, 40])
def test_native_and_numpy_hash_rows_agree_for_every_width(width: int) -> None:
    block = np.random.default_rng(width).integers(0, 256, (300, width), dtype=np.uint8)
    seeds = _seeds(300, width)
    native = hash_rows(block, seeds)
    assert np.array_equal(native, hash_rows(block, seeds, use_native=False))
    assert native[7] == xxhash.xxh64_intdigest(block[7].tobytes(), seed=int(seeds[7]))


def test_native_hash_refuses_offsets_that_do_not_fit_the_rows() -> None:
    with pytest.raises(ValueError, match="offsets"):
        keys.native.hash_var(np.zeros(4, np.uint8), np.array([0, 2], np.int32), None, np.zeros(3, np.uint64))
    with pytest.raises(ValueError, match="outside"):
        keys.native.hash_var(np.zeros(4, np.uint8), np.array([0, 9], np.int64), None, np.zeros(1, np.uint64))
    with pytest.raises(ValueError, match="width"):
        keys.native.hash_fixed(np.zeros(5, np.uint8), 4, None, np.zeros(1, np.uint64))
