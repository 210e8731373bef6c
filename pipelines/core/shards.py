"""Divide-and-conquer shard planning over the signed 64-bit key-hash space.

The space [-2**63, 2**63) is halved recursively; a range becomes a shard once it holds at
most ``shard_rows`` keys (or cannot be halved further). A shard is named by its depth and
index, ``"{depth:02d}-{index:x}"``: depth d, index i is the range
``[-2**63 + i * 2**(64-d), -2**63 + (i+1) * 2**(64-d))``. The same key lands in the same
shard on every engine and every machine, for a given plan. Empty ranges are left out.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

HASH_MIN = -(1 << 63)
HASH_SPAN_BITS = 64


@dataclass(frozen=True, order=True)
class Shard:
    """One unit of work: the keys whose hash lies in [lo, hi)."""

    lo: int
    hi: int
    depth: int
    index: int
    rows: int

    @property
    def shard_id(self) -> str:
        return f"{self.depth:02d}-{self.index:x}"


def shard_bounds(depth: int, index: int) -> tuple[int, int]:
    width = 1 << (HASH_SPAN_BITS - depth)
    lo = HASH_MIN + index * width
    return lo, lo + width


def plan_shards(hashes: np.ndarray, shard_rows: int, *, in_place: bool = False) -> list[Shard]:
    """Split the hash space until each shard holds at most ``shard_rows`` of ``hashes``.

    Args:
        hashes: int64 key hashes of every input row (any order).
        shard_rows: upper bound of rows per shard (a single hash value is never split, so a
            shard of identical hashes may exceed it).
        in_place: sort ``hashes`` itself (an int64 array) instead of a copy: the planner's
            hashes are not needed after, and a copy would hold every hash twice.

    Returns:
        Non-empty shards ordered by hash range.
    """
    if shard_rows < 1:
        raise ValueError("shard_rows must be at least 1")
    ordered = np.asarray(hashes, dtype=np.int64)
    if in_place and ordered is hashes:
        ordered.sort()
    else:
        ordered = np.sort(ordered)
    shards: list[Shard] = []
    stack = [(0, 0)]
    while stack:
        depth, index = stack.pop()
        lo, hi = shard_bounds(depth, index)
        start = int(np.searchsorted(ordered, lo, side="left")) if lo > HASH_MIN else 0
        stop = (
            int(np.searchsorted(ordered, hi, side="left")) if hi <= np.iinfo(np.int64).max else len(ordered)
        )
        rows = stop - start
        if rows == 0:
            continue
        single_value = ordered[start] == ordered[stop - 1]
        if rows <= shard_rows or depth == HASH_SPAN_BITS or single_value:
            shards.append(Shard(lo=lo, hi=hi, depth=depth, index=index, rows=rows))
            continue
        # Push the upper half first so the lower half is planned first (ascending output).
        stack.append((depth + 1, 2 * index + 1))
        stack.append((depth + 1, 2 * index))
    return shards


def runs(values: np.ndarray) -> Iterator[tuple[int, int, int]]:
    """(value, start, stop) of each run of equal consecutive ``values`` (e.g. shard positions, sorted).

    Both engines cut sorted rows into one piece per shard with it.
    """
    if len(values) == 0:
        return
    bounds = np.flatnonzero(np.diff(values)) + 1
    starts = np.concatenate([[0], bounds])
    stops = np.concatenate([bounds, [len(values)]])
    for start, stop in zip(starts, stops, strict=True):
        yield int(values[start]), int(start), int(stop)


def assign_shards(hashes: np.ndarray, shards: list[Shard]) -> np.ndarray:
    """Position in ``shards`` (ordered by range) of each hash; -1 where no shard covers it."""
    if not shards:
        return np.full(len(hashes), -1, dtype=np.int64)
    los = np.array([s.lo for s in shards], dtype=np.int64)
    # hi can be 2**63, one past int64: compare as "hash <= hi - 1" instead.
    last = np.array([s.hi - 1 for s in shards], dtype=np.int64)
    pos = np.searchsorted(los, hashes, side="right") - 1
    clipped = np.clip(pos, 0, len(shards) - 1)
    covered = (pos >= 0) & (hashes <= last[clipped])
    return np.where(covered, pos, -1)
