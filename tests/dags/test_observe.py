"""Run statistics streamed in batches add up to the statistics of the whole data."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from pipelines.core.stats import column_stats
from pipelines.observe import streamed_stats

COLUMNS = ["x", "city"]


@pytest.fixture()
def table() -> pa.Table:
    rng = np.random.default_rng(7)
    return pa.table(
        {
            "x": rng.normal(size=1_000).astype(np.float32),
            "city": rng.choice(["EWR", "JFK", "LGA"], size=1_000).tolist(),
        }
    )


def _batches(table: pa.Table) -> list[pa.Table]:
    return [table.slice(start, 128) for start in range(0, table.num_rows, 128)]


def test_batches_against_a_reference_add_up_to_the_whole_table(table: pa.Table) -> None:
    reference = column_stats(table.slice(0, 300), COLUMNS)
    streamed = streamed_stats(_batches(table), COLUMNS, reference)
    whole = column_stats(table, COLUMNS, reference=reference)
    assert streamed["x"]["histogram"] == whole["x"]["histogram"]
    assert streamed["x"]["mean"] == pytest.approx(whole["x"]["mean"])
    assert streamed["city"]["top"] == whole["city"]["top"]


def test_columns_without_reference_share_the_first_batch_buckets(table: pa.Table) -> None:
    streamed = streamed_stats(_batches(table), COLUMNS, {})
    assert streamed["x"]["count"] == 1_000
    assert sum(streamed["x"]["histogram"]["counts"]) == 1_000
    assert sum(streamed["city"]["top"].values()) == 1_000


def test_no_rows_give_empty_statistics_not_an_error(table: pa.Table) -> None:
    assert streamed_stats([table.slice(0, 0)], COLUMNS, {})["x"]["count"] == 0
    assert streamed_stats([], COLUMNS, {}) == {}
