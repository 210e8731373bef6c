from __future__ import annotations

import numpy as np
import pytest

from pipelines.core.shards import HASH_MIN, assign_shards, plan_shards, runs, shard_bounds


def _hashes(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(HASH_MIN, 2**63 - 1, n, dtype=np.int64)


@pytest.mark.parametrize("shard_rows", [1_000, 7_777, 100_000])
def test_every_shard_holds_at_most_shard_rows_and_all_rows_are_covered(shard_rows: int) -> None:
    hashes = _hashes(50_000)
    shards = plan_shards(hashes, shard_rows)
    assert all(0 < s.rows <= shard_rows for s in shards)
    positions = assign_shards(hashes, shards)
    assert (positions >= 0).all()
    assert np.bincount(positions, minlength=len(shards)).tolist() == [s.rows for s in shards]


def test_shards_are_contiguous_halvings_named_by_depth_and_index() -> None:
    shards = plan_shards(_hashes(10_000), 3_000)
    for shard in shards:
        assert (shard.lo, shard.hi) == shard_bounds(shard.depth, shard.index)
    assert [s.lo for s in shards] == sorted(s.lo for s in shards)
    assert shards[0].shard_id == f"{shards[0].depth:02d}-{shards[0].index:x}"


def test_plan_is_independent_of_row_order() -> None:
    hashes = _hashes(20_000)
    assert plan_shards(hashes, 2_500) == plan_shards(hashes[::-1].copy(), 2_500)


def test_identical_hashes_are_never_split() -> None:
    shards = plan_shards(np.array([5, 5, 5, 5], dtype=np.int64), 1)
    assert len(shards) == 1 and shards[0].rows == 4


def test_hash_outside_every_planned_shard_is_marked_minus_one() -> None:
    shards = plan_shards(np.array([HASH_MIN, HASH_MIN + 1], dtype=np.int64), 1)
    assert assign_shards(np.array([2**63 - 1], dtype=np.int64), shards).tolist() == [-1]


def test_runs_are_the_value_start_and_stop_of_each_equal_stretch() -> None:
    assert list(runs(np.array([-1, -1, 0, 2, 2, 2]))) == [(-1, 0, 2), (0, 2, 3), (2, 3, 6)]
    assert list(runs(np.array([], dtype=np.int64))) == []
