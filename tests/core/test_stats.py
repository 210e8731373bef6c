from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from pipelines.core.stats import HISTOGRAM_BINS, column_stats, drift, merge_stats
from pipelines.errors import InputError


def _table(n: int = 5_000, *, shift: float = 0.0, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    carriers = np.array(["UA", "AA", "DL", "B6"])
    weights = [0.4, 0.3, 0.2, 0.1] if shift == 0 else [0.1, 0.1, 0.2, 0.6]
    return pa.table(
        {
            "x": pa.array(rng.normal(shift, 1.0, n), pa.float64()),
            "hour": pa.array(rng.integers(5, 23, n), pa.int64()),
            "carrier": pa.array(rng.choice(carriers, n, p=weights), pa.string()),
        }
    )


def test_numeric_stats_describe_the_column() -> None:
    stats = column_stats(pa.table({"x": [1.0, 2.0, 3.0, 4.0]}), ["x"])["x"]
    assert (stats["count"], stats["nulls"], stats["mean"]) == (4, 0, 2.5)
    assert (stats["min"], stats["max"]) == (1.0, 4.0)
    assert stats["std"] == pytest.approx(np.std([1.0, 2.0, 3.0, 4.0]))
    assert sum(stats["histogram"]["counts"]) == 4


def test_histogram_has_ten_bins_over_quantile_edges() -> None:
    stats = column_stats(_table(), ["x"])["x"]
    assert len(stats["histogram"]["edges"]) == HISTOGRAM_BINS + 1
    assert all(400 <= c <= 600 for c in stats["histogram"]["counts"])


def test_nulls_and_nans_are_counted_as_nulls() -> None:
    table = pa.table({"x": pa.array([1.0, None, float("nan"), 4.0]), "s": pa.array(["a", None, "b", "a"])})
    stats = column_stats(table, ["x", "s"])
    assert (stats["x"]["count"], stats["x"]["nulls"], stats["x"]["mean"]) == (4, 2, 2.5)
    assert (stats["s"]["nulls"], stats["s"]["top"]) == (1, {"a": 2, "b": 1})


def test_all_null_column_has_no_moments() -> None:
    stats = column_stats(pa.table({"x": pa.array([None, None], pa.float32())}), ["x"])["x"]
    assert (stats["nulls"], stats["mean"], stats["histogram"]["counts"]) == (2, None, [])


def test_string_top_values_are_ranked_and_capped_at_twenty() -> None:
    values = [f"v{i:02d}" for i in range(30) for _ in range(i + 1)]
    top = column_stats(pa.table({"s": values}), ["s"])["s"]["top"]
    assert len(top) == 20
    assert list(top)[:2] == ["v29", "v28"]


def test_stats_are_plain_json() -> None:
    stats = column_stats(_table(), ["x", "hour", "carrier"])
    assert json.loads(json.dumps(stats)) == stats


def test_drift_is_zero_for_identical_data() -> None:
    reference = column_stats(_table(), ["x", "hour", "carrier"])
    current = column_stats(_table(), ["x", "hour", "carrier"], reference=reference)
    assert drift(reference, current) == {"x": 0.0, "hour": 0.0, "carrier": 0.0}


def test_drift_is_small_for_a_fresh_sample_and_large_for_a_shift() -> None:
    reference = column_stats(_table(seed=1), ["x", "carrier"])
    same = drift(reference, column_stats(_table(seed=2), ["x", "carrier"], reference=reference))
    shifted = drift(reference, column_stats(_table(shift=1.0), ["x", "carrier"], reference=reference))
    assert max(same.values()) < 0.02
    assert min(shifted.values()) > 0.25


def test_drift_counts_a_rise_in_nulls() -> None:
    reference = column_stats(pa.table({"x": np.arange(1000.0)}), ["x"])
    values = pa.array(np.where(np.arange(1000) % 2 == 0, np.nan, np.arange(1000.0)))
    assert drift(reference, column_stats(pa.table({"x": values}), ["x"], reference=reference))["x"] > 1.0


def test_drift_without_shared_edges_is_approximated() -> None:
    reference = column_stats(_table(seed=1), ["x"])
    assert drift(reference, column_stats(_table(seed=2), ["x"]))["x"] < 0.02
    assert drift(reference, column_stats(_table(shift=1.0), ["x"]))["x"] > 0.25


def test_merge_of_parts_equals_stats_of_the_whole() -> None:
    whole = _table()
    reference = column_stats(whole, ["x", "carrier"])
    parts = [
        column_stats(whole.slice(i, 1000), ["x", "carrier"], reference=reference)
        for i in range(0, 5000, 1000)
    ]
    merged = merge_stats(parts)
    assert merged["x"]["histogram"] == reference["x"]["histogram"]
    assert merged["x"]["std"] == pytest.approx(reference["x"]["std"])
    assert merged["carrier"]["top"] == reference["carrier"]["top"]


def test_merge_keeps_working_when_the_reference_part_had_no_values() -> None:
    first = pa.table({"x": pa.array([None, None], pa.float64())})
    reference = column_stats(first, ["x"])
    second = column_stats(pa.table({"x": [1.0, 2.0]}), ["x"], reference=reference)
    merged = merge_stats([column_stats(first, ["x"], reference=reference), second])["x"]
    assert (merged["count"], merged["nulls"], merged["mean"]) == (4, 2, 1.5)


def test_unsupported_column_type_says_what_to_do() -> None:
    with pytest.raises(InputError, match="cast it"):
        column_stats(pa.table({"d": pa.array([1, 2], pa.date32())}), ["d"])
