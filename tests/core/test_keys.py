from __future__ import annotations

import random
import string

import numpy as np
import pyarrow as pa
import xxhash

from pipelines.core.keys import NULL_KEY_HASH, key_hash


def _reference(key: str) -> int:
    return int(np.uint64(xxhash.xxh64_intdigest(key.encode(), seed=42)).view(np.int64))


def test_key_hash_equals_reference_xxh64_for_every_length_and_unicode() -> None:
    rng = random.Random(7)
    keys = ["", "a", "é€😀", "x" * 31, "y" * 32, "z" * 33, "w" * 100]
    keys += ["".join(rng.choice(string.printable) for _ in range(rng.randint(0, 80))) for _ in range(500)]
    assert key_hash(pa.array(keys)).tolist() == [_reference(k) for k in keys]


def test_key_hash_of_null_is_zero_and_neighbours_unaffected() -> None:
    hashes = key_hash(pa.array(["a", None, "b"]))
    assert hashes.tolist() == [_reference("a"), NULL_KEY_HASH, _reference("b")]


def test_key_hash_is_the_same_for_chunked_sliced_and_large_string_input() -> None:
    keys = [f"2013-07-01_UA{i}_EWR" for i in range(100)]
    expected = key_hash(pa.array(keys))
    chunked = pa.chunked_array([pa.array(keys[:40]), pa.array(keys[40:])])
    assert np.array_equal(key_hash(chunked), expected)
    assert np.array_equal(key_hash(pa.array(keys).slice(10, 50)), expected[10:60])
    assert np.array_equal(key_hash(pa.array(keys, pa.large_string())), expected)
