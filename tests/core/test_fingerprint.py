"""The input fingerprint: Spark's multi-column xxhash64 (seed 42) over the coerced inputs."""

from __future__ import annotations

import struct

import pyarrow as pa
import xxhash

from pipelines.core.fingerprint import input_fingerprint


def _reference(row: dict[str, object]) -> int:
    """XXH64 chained over the values' bytes, as Spark's xxhash64(c1, ..., cN) defines it."""
    seed = 42
    for value in row.values():
        if isinstance(value, str):
            data = value.encode()
        elif isinstance(value, bool):
            data = struct.pack("<i", int(value))
        elif isinstance(value, int):
            data = struct.pack("<q", value)
        else:
            assert isinstance(value, float)
            data = struct.pack("<f", 0.0 if value == 0.0 else value)
        seed = xxhash.xxh64_intdigest(data, seed=seed)
    return seed - (1 << 64) if seed >= 1 << 63 else seed


TABLE = pa.table(
    {
        "carrier": ["UA", "", "a long carrier name over thirty-two bytes", "é"],
        "distance": pa.array([1400, 0, -5, 2**40], pa.int64()),
        "temp": pa.array([71.5, -0.0, 1e-30, 3.25], pa.float32()),
        "flag": [True, False, True, False],
    }
)


def test_fingerprint_equals_chained_xxh64_of_each_value() -> None:
    expected = [_reference(row) for row in TABLE.to_pylist()]
    assert input_fingerprint(TABLE, TABLE.column_names).tolist() == expected


def test_negative_zero_fingerprints_as_zero() -> None:
    zero = TABLE.set_column(2, "temp", pa.array([71.5, 0.0, 1e-30, 3.25], pa.float32()))
    assert input_fingerprint(zero, ["temp"])[1] == input_fingerprint(TABLE, ["temp"])[1]


def test_any_changed_input_changes_the_fingerprint_and_nothing_else_does() -> None:
    base = input_fingerprint(TABLE, ["carrier", "distance", "temp"])
    changed = TABLE.set_column(1, "distance", pa.array([1401, 0, -5, 2**40], pa.int64()))
    after = input_fingerprint(changed, ["carrier", "distance", "temp"])
    assert (after != base).tolist() == [True, False, False, False]
    rechunked = pa.concat_tables([TABLE.slice(0, 1), TABLE.slice(1)])
    assert input_fingerprint(rechunked, ["carrier", "distance", "temp"]).tolist() == base.tolist()


def test_column_order_matters() -> None:
    assert (
        input_fingerprint(TABLE, ["distance", "temp"]) != input_fingerprint(TABLE, ["temp", "distance"])
    ).all()
