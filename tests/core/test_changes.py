"""The planner's comparison of a snapshot with the pairs of the basis run (``core.changes``).

A stored pair always comes from a scored shard (``score_table``: validate, then fingerprint the
coerced rows); the planner fingerprints raw rows through ``coerce``. These tests hold the two
paths to the same answer, and check that nothing is left out that a full run would treat
differently: changed values, new keys, rows validation rejects, duplicated keys.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.core import changes as changes_module
from pipelines.core.card import Card
from pipelines.core.changes import PAIR, Basis, find_changes, make_pairs, pairs_from_bytes, stored_pairs
from pipelines.core.fingerprint import fingerprint_columns, input_fingerprint
from pipelines.core.keys import key_hash
from pipelines.core.validate import coerce, validate

CARD = Card.model_validate(
    {
        "name": "toy",
        "version": "1",
        "key": "id",
        "inputs": [
            {"name": "x", "dtype": "float32"},
            {"name": "n", "dtype": "int64"},
            {"name": "c", "dtype": "string"},
            {"name": "v", "dtype": "float32", "shape": ["N", 2]},
        ],
        "outputs": [{"name": "score", "dtype": "float32"}],
        "signatures": {"default": "model.onnx"},
        "artifacts": {},
    }
)


def _rows(n: int = 50) -> pa.Table:
    return pa.table(
        {
            "id": [f"k{i}" for i in range(n)],
            "x": pa.array([i / 7 for i in range(n)], pa.float64()),  # float64 -> float32 rounds
            "n": pa.array(range(n), pa.int32()),  # int32 -> int64
            "c": [f"c{i % 3}" for i in range(n)],
            "v": [[float(i), -float(i)] for i in range(n)],
        }
    )


def _pairs_of_a_full_run(table: pa.Table) -> Basis:
    """The pairs a full run of ``table`` stores (the shard path: validate, fingerprint, keep good rows)."""
    good = validate(table, CARD).good
    fps = input_fingerprint(good, fingerprint_columns(CARD))
    predictions = pa.table({"key": good.column("id"), "input_fp": pa.array(fps, pa.int64())})
    return Basis(stored_pairs(predictions))


def _snapshot(tmp_path: Path, table: pa.Table, name: str = "b") -> list[Path]:
    path = tmp_path / f"{name}.parquet"
    pq.write_table(table, path, row_group_size=16)  # several batches per file
    return [path]


def test_coerce_fingerprints_valid_rows_as_the_shard_path_does() -> None:
    table = _rows()
    good = validate(table, CARD).good
    columns = fingerprint_columns(CARD)
    assert (
        input_fingerprint(coerce(table, CARD), columns).tolist() == input_fingerprint(good, columns).tolist()
    )


def test_an_unchanged_snapshot_forwards_nothing(tmp_path: Path) -> None:
    table = _rows()
    changes = find_changes(_snapshot(tmp_path, table), CARD, _pairs_of_a_full_run(table), batch_rows=16)
    assert (changes.rows, changes.rows_unchanged, changes.forwarded.num_rows) == (50, 50, 0)
    assert changes.forwarded.column_names == ["id", "x", "n", "c", "v"]


def test_changed_and_new_rows_are_forwarded_as_read(tmp_path: Path) -> None:
    before = _rows()
    rows = before.to_pylist()
    rows[3]["x"] += 1.0
    rows[4]["v"] = [4.0, 4.5]
    rows[5]["c"] = "other"
    rows.append({"id": "new", "x": 0.5, "n": 1, "c": "c0", "v": [0.0, 0.0]})
    after = pa.Table.from_pylist(rows, schema=before.schema)
    changes = find_changes(_snapshot(tmp_path, after), CARD, _pairs_of_a_full_run(before), batch_rows=16)
    assert sorted(changes.forwarded.column("id").to_pylist()) == ["k3", "k4", "k5", "new"]
    assert changes.rows_unchanged == 47
    assert changes.forwarded.schema == after.schema  # raw types: the shard validates them as usual


def test_a_float64_change_below_float32_precision_is_unchanged(tmp_path: Path) -> None:
    """The model sees float32: a full run would store the same prediction, so nothing to rescore."""
    before = _rows()
    x = before.column("x").to_pylist()
    x[7] = float(np.nextafter(x[7], 1.0))
    after = before.set_column(1, "x", pa.array(x, pa.float64()))
    changes = find_changes(_snapshot(tmp_path, after), CARD, _pairs_of_a_full_run(before), batch_rows=16)
    assert changes.forwarded.num_rows == 0


@pytest.mark.parametrize(
    ("column", "value"),
    [("x", None), ("x", math.nan), ("x", 1e300), ("v", [1.0]), ("v", None), ("c", None), ("id", "")],
)
def test_a_row_validation_would_reject_is_never_unchanged(tmp_path: Path, column: str, value: object) -> None:
    before = _rows()
    rows = before.to_pylist()
    rows[9][column] = value
    after = pa.Table.from_pylist(rows, schema=before.schema)
    changes = find_changes(_snapshot(tmp_path, after), CARD, _pairs_of_a_full_run(before), batch_rows=16)
    forwarded = changes.forwarded.to_pylist()
    assert [row["id"] for row in forwarded] == [rows[9]["id"]]
    got = forwarded[0][column]
    assert got == value or (isinstance(value, float) and math.isnan(got))


def test_every_occurrence_of_a_duplicated_key_is_forwarded(tmp_path: Path) -> None:
    """Both copies reach one shard, which rejects both, as a full run of this snapshot does."""
    before = _rows()
    after = pa.concat_tables([before, before.slice(20, 1)])  # k20 twice, both identical to the basis
    changes = find_changes(_snapshot(tmp_path, after), CARD, _pairs_of_a_full_run(before), batch_rows=16)
    assert changes.forwarded.column("id").to_pylist() == ["k20", "k20"]
    assert changes.rows_unchanged == 49


def test_integer_keys_are_compared_by_their_decimal_text(tmp_path: Path) -> None:
    before = _rows().set_column(0, "id", pa.array(range(50), pa.int64()))
    changes = find_changes(_snapshot(tmp_path, before), CARD, _pairs_of_a_full_run(before), batch_rows=16)
    assert changes.rows_unchanged == 50


def test_an_empty_basis_forwards_every_row(tmp_path: Path) -> None:
    changes = find_changes(_snapshot(tmp_path, _rows()), CARD, Basis(np.empty(0, PAIR)), batch_rows=16)
    assert (changes.forwarded.num_rows, changes.rows_unchanged) == (50, 0)


def test_basis_without_drops_exactly_the_rescored_keys() -> None:
    keys = pa.array([f"k{i}" for i in range(10)])
    basis = Basis(make_pairs(key_hash(keys), np.arange(10, dtype=np.int64)))
    kept = basis.without(key_hash(pa.array(["k2", "k7", "absent"])))
    assert sorted(kept["fp"].tolist()) == [0, 1, 3, 4, 5, 6, 8, 9]


def test_pairs_round_trip_through_bytes_in_parts() -> None:
    pairs = make_pairs(np.array([5, -3, 9], np.int64), np.array([50, -30, 90], np.int64))
    back = pairs_from_bytes([pairs[:1].tobytes(), pairs[1:].tobytes()])
    assert back["key_hash"].tolist() == [-3, 5, 9] and back["fp"].tolist() == [-30, 50, 90]


def test_pairs_from_parts_in_any_order_and_overlapping_ranges_come_back_sorted() -> None:
    rng = np.random.default_rng(4)
    everything = make_pairs(rng.integers(-(2**63), 2**63 - 1, 5000, dtype=np.int64), np.arange(5000))
    ranges = [everything[i : i + 700] for i in range(0, 5000, 700)]  # disjoint, like a run's shards
    interleaved = [everything[0::2], everything[1::2]]  # overlapping, like shards and carried parts
    for parts in (ranges[::-1], interleaved, [everything[:0], *ranges[3:], *ranges[:3]]):
        back = pairs_from_bytes(part.tobytes() for part in parts)
        assert np.array_equal(back, everything)


@pytest.mark.parametrize("size", [1, 7, 1000, 50_000])
def test_basis_lookup_agrees_with_searchsorted_for_hits_misses_and_extremes(size: int) -> None:
    rng = np.random.default_rng(size)
    hashes = rng.integers(-(2**63), 2**63 - 1, size, dtype=np.int64)
    hashes[0] = -(2**63)  # the extremes of the hash space
    hashes[-1] = 2**63 - 1
    basis = Basis(make_pairs(hashes, hashes ^ 5))
    probes = np.concatenate([hashes, hashes + 1, rng.integers(-(2**63), 2**63 - 1, 500, dtype=np.int64)])
    expected = np.isin(probes, hashes)
    assert basis.matches(probes, probes ^ 5).tolist() == expected.tolist()
    assert not basis.matches(hashes, hashes ^ 6).any()  # same key, other fingerprint


@pytest.mark.skipif(changes_module.native is None, reason="the C extension is not built: pip install -e .")
@pytest.mark.parametrize("size", [1, 2, 9, 1000, 50_000])
def test_native_lookup_finds_the_same_positions_as_numpy(size: int) -> None:
    rng = np.random.default_rng(size)
    hashes = np.unique(rng.integers(-(2**63), 2**63 - 1, size, dtype=np.int64))
    basis = Basis(make_pairs(hashes, hashes ^ 5))
    extremes = np.array([-(2**63), 2**63 - 1, 0, -1], dtype=np.int64)
    queries = np.concatenate([hashes[::3], rng.integers(-(2**63), 2**63 - 1, 2000, dtype=np.int64), extremes])
    native_at, native_found = basis._positions(queries)
    numpy_at, numpy_found = basis._positions(queries, use_native=False)
    assert np.array_equal(native_found, numpy_found) and np.array_equal(native_at, numpy_at)
    assert native_found[: len(hashes[::3])].all()
