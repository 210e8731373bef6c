from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from pipelines.data.flights import DATE_COLUMN, FLIGHT_KEY, load_flights_table
from pipelines.data.synth import replica_key, synth_rows, write_synth
from pipelines.errors import InputError

REAL_ROWS = 336_776
#: One whole replica and part of the next: exercises both halves of the recipe.
ROWS = REAL_ROWS + 1_234


def _read(out: Path) -> pa.Table:
    return pads.dataset(out, format="parquet", partitioning="hive").to_table()


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    write_synth(out, rows=ROWS)
    return out


@pytest.fixture(scope="module")
def real() -> pa.Table:
    return load_flights_table()


def test_writes_exactly_the_rows_asked_for(synth_dir: Path) -> None:
    assert _read(synth_dir).num_rows == ROWS
    assert synth_rows(synth_dir) == ROWS


def test_every_key_is_unique(synth_dir: Path) -> None:
    keys = _read(synth_dir).column(FLIGHT_KEY)
    assert pc.count_distinct(keys).as_py() == ROWS


def test_files_have_the_real_data_schema(synth_dir: Path, real: pa.Table) -> None:
    files = sorted(synth_dir.glob("date=*/part-*.parquet"))
    assert files and all(pq.read_schema(f) == real.drop_columns([DATE_COLUMN]).schema for f in files)


def test_replica_row_is_the_real_row_under_a_new_key(synth_dir: Path, real: pa.Table) -> None:
    synth = _read(synth_dir)
    row = synth.filter(pc.equal(synth[FLIGHT_KEY], replica_key("2013-01-01_UA1545_EWR", 0))).to_pylist()
    original = real.filter(pc.equal(real[FLIGHT_KEY], "2013-01-01_UA1545_EWR")).to_pylist()
    assert len(row) == 1
    ignore = {FLIGHT_KEY: None, DATE_COLUMN: None}
    assert {**row[0], **ignore} == {**original[0], **ignore}


def test_partial_replica_is_spread_over_the_year(tmp_path: Path) -> None:
    write_synth(tmp_path, rows=500)
    days = set(_read(tmp_path).column(DATE_COLUMN).to_pylist())
    assert len(days) > 300


def test_same_rows_give_identical_files(tmp_path: Path) -> None:
    write_synth(tmp_path / "a", rows=2_000)
    write_synth(tmp_path / "b", rows=2_000)
    a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.parquet"))
    b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*.parquet"))
    assert a == b
    assert all((tmp_path / "a" / p).read_bytes() == (tmp_path / "b" / p).read_bytes() for p in a)


def test_rewriting_a_synth_folder_replaces_its_rows(tmp_path: Path) -> None:
    write_synth(tmp_path, rows=3_000)
    write_synth(tmp_path, rows=700)
    assert _read(tmp_path).num_rows == 700


def test_refuses_a_folder_holding_other_files(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty"):
        write_synth(tmp_path, rows=10)
