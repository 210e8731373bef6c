"""The C kernel for numeric statistics (core/_moments.c) gives numpy's answer."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from pipelines.core import stats
from tests.stats_compare import close

pytestmark = pytest.mark.skipif(stats.native is None, reason="the C extension is not built: pip install -e .")


def _columns() -> dict[str, pa.ChunkedArray]:
    rng = np.random.default_rng(3)
    floats = rng.normal(10.0, 3.0, 5000)
    floats[::97] = np.nan
    with_nulls = pa.array(rng.integers(-50, 50, 5000), mask=rng.random(5000) < 0.05)
    return {
        "floats": pa.chunked_array([pa.array(floats[:2000]), pa.array(floats[2000:])]),
        "float32": pa.chunked_array([pa.array(floats.astype(np.float32))]),
        "ints_with_nulls": pa.chunked_array([with_nulls]),
        "bools": pa.chunked_array([pa.array(rng.random(5000) < 0.3)]),
        "all_null": pa.chunked_array([pa.array([None, None], pa.float64())]),
        "empty": pa.chunked_array([pa.array([], pa.int64())]),
        "outside_edges": pa.chunked_array([pa.array([-1e9, 1e9, 10.0, 5.0])]),
    }


@pytest.mark.parametrize("edges", [[0.0, 5.0, 10.0, 10.0, 15.0, 20.0], [5.0], [], [1.0, 2.0]])
def test_native_numeric_stats_equal_numpys_on_the_same_edges(edges: list[float]) -> None:
    for name, column in _columns().items():
        if pa.types.is_boolean(column.type):
            column = pa.chunked_array([c.cast(pa.int8()) for c in column.chunks])
        native = stats._numeric_stats(column, edges)
        numpy = stats._numeric_stats(column, edges, use_native=False)
        assert close(native, numpy), (name, native, numpy)


def test_native_kernel_refuses_wrong_types_and_count_slots() -> None:
    with pytest.raises(TypeError, match="float64"):
        stats.native.summary(np.zeros(3, np.int64), np.zeros(1), np.zeros(2, np.int64))
    with pytest.raises(ValueError, match="slots"):
        stats.native.summary(np.zeros(3), np.zeros(2), np.zeros(2, np.int64))


@pytest.mark.parametrize(
    ("values", "counts", "nulls"),
    [
        ([0, 1], [900, 100], 5),
        ([3], [42], 0),
        ([-2, 7, 1, 5], [1, 1000, 3, 77], 11),
        ([], [], 4),
        ([10, 20, 30], [5, 5, 5], 0),
    ],
)
def test_counted_stats_equal_the_stats_of_the_rows_they_count(
    values: list[int], counts: list[int], nulls: int
) -> None:
    rows = np.repeat(np.array(values, np.int64), np.array(counts, np.int64))
    column = pa.chunked_array([pa.array(rows, pa.int64()), pa.nulls(nulls, pa.int64())])
    expected = stats.column_stats(pa.table({"label": column}), ["label"])["label"]
    got = stats.counted_stats(np.array(values, np.int64), np.array(counts, np.int64), nulls)
    assert close(got, expected), (got, expected)
