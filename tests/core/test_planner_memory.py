"""Planner memory: keys hashed in streamed batches; oversized row groups refused with how to fix them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.core.card import load_card
from pipelines.core.inputs import check_input, key_hashes
from pipelines.core.keys import key_hash
from pipelines.errors import InputError
from pipelines.settings import DEFAULT_MODELS_DIR


def _write(path: Path, n: int, *, row_group_size: int) -> Path:
    table = pa.table({"id": [f"key-{i}" for i in range(n)], "x": np.arange(n, dtype=np.float64)})
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


def test_key_hashes_streamed_in_batches_equal_hashing_the_whole_column(tmp_path: Path) -> None:
    files = [
        _write(tmp_path / "a.parquet", 2_500, row_group_size=1_000),
        _write(tmp_path / "b.parquet", 7, row_group_size=7),
    ]
    whole = np.concatenate([key_hash(pq.read_table(p, columns=["id"])["id"]) for p in files])
    assert np.array_equal(key_hashes(files, "id", batch_rows=300), whole)


def test_a_row_group_above_the_bound_is_refused_with_how_to_rewrite_the_file(tmp_path: Path) -> None:
    from datetime import date

    from pipelines.data.flights import load_flights_table

    card = load_card(DEFAULT_MODELS_DIR / "flights_delay" / "1")
    path = tmp_path / "day.parquet"
    pq.write_table(load_flights_table(date(2013, 7, 1), date(2013, 7, 1)), path, row_group_size=400)
    check_input([path], card, max_row_group_rows=400)
    with pytest.raises(InputError, match=r"row group of 400 rows.*above the limit of 399.*row_group_size="):
        check_input([path], card, max_row_group_rows=399)


def test_planning_holds_every_key_hash_once(tmp_path: Path) -> None:
    """The hashes live in one array, sorted in place: not parts plus their concatenation plus a
    sorted copy (3x, +160 MB at 10M rows). numpy's allocations are visible to tracemalloc."""
    import tracemalloc

    from pipelines.core.inputs import scan_keys
    from pipelines.core.shards import plan_shards

    n = 400_000
    files = [_write(tmp_path / f"{i}.parquet", n // 4, row_group_size=50_000) for i in range(4)]
    card = load_card(DEFAULT_MODELS_DIR / "flights_delay" / "1").model_copy(update={"key": "id"})
    tracemalloc.start()
    try:
        scan = scan_keys(files, card, batch_rows=20_000)
        shards = plan_shards(scan.hashes, 20_000, in_place=True)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sum(s.rows for s in shards) == n
    assert np.all(scan.hashes[1:] >= scan.hashes[:-1])  # sorted where it lies
    assert peak < 1.5 * 8 * n, f"planning peaked at {peak / 8 / n:.1f} bytes per row"
