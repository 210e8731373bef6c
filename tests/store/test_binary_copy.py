"""The binary COPY encoder against a real PostgreSQL: every supported type, nulls, unicode, jsonb."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from pipelines.store.binary_copy import encode
from pipelines.store.db import connection

DDL = (
    "CREATE TABLE IF NOT EXISTS binary_copy_probe (i integer, b bigint, k text, s real, d double precision, "
    "ok boolean, j jsonb)"
)


def _roundtrip(url: str, table: pa.Table) -> list[tuple[object, ...]]:
    with connection(url, autocommit=True) as conn:
        conn.execute(DDL)
        conn.execute("TRUNCATE binary_copy_probe")
        cursor = conn.cursor()
        with cursor.copy("COPY binary_copy_probe FROM STDIN (FORMAT binary)") as copy:
            copy.write(encode(table, jsonb_columns=frozenset({"j"})))
        assert cursor.rowcount == table.num_rows
        return conn.execute("SELECT * FROM binary_copy_probe ORDER BY b").fetchall()


def test_every_type_and_null_survives_a_binary_copy(database_url: str) -> None:
    table = pa.table(
        {
            "i": pa.array([1, None, -3], pa.int32()),
            "b": pa.array([1, 2, 3], pa.int64()),
            "k": pa.array(["a", None, "ééx#r1"]),
            "s": pa.array([0.1, 2.5, None], pa.float32()),
            "d": pa.array([None, -1e300, 0.5], pa.float64()),
            "ok": pa.array([True, None, False]),
            "j": pa.array(['{"x": 1}', None, "[1, 2]"]),
        }
    )
    rows = _roundtrip(database_url, table)
    assert rows == [
        (1, 1, "a", pytest.approx(0.1), None, True, {"x": 1}),
        (None, 2, None, 2.5, -1e300, None, None),
        (-3, 3, "ééx#r1", None, 0.5, False, [1, 2]),
    ]
    assert np.float32(float(rows[0][3])) == np.float32(0.1)  # type: ignore[arg-type]


def test_a_sliced_table_encodes_only_its_rows(database_url: str) -> None:
    table = pa.table({"b": pa.array(range(10), pa.int64()), "k": [f"key{i}" for i in range(10)]})
    with connection(database_url, autocommit=True) as conn:
        conn.execute(DDL)
        conn.execute("TRUNCATE binary_copy_probe")
        with conn.cursor().copy("COPY binary_copy_probe (b, k) FROM STDIN (FORMAT binary)") as copy:
            copy.write(encode(table.slice(3, 4)))
        assert conn.execute("SELECT b, k FROM binary_copy_probe ORDER BY b").fetchall() == [
            (3, "key3"),
            (4, "key4"),
            (5, "key5"),
            (6, "key6"),
        ]


def test_an_unsupported_type_is_refused() -> None:
    with pytest.raises(TypeError, match="cannot encode column t"):
        encode(pa.table({"t": pa.array([[1]], pa.list_(pa.int64()))}))
