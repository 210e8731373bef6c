from __future__ import annotations

import math
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from pipelines.data.flights import FILE_COLUMNS, LABELS_DIR, PARTITION_FILE, load_flights_table, write_flights
from pipelines.errors import InputError

ALL_FLIGHTS = 336_776


@pytest.fixture(scope="module")
def flights() -> pa.Table:
    return load_flights_table()


def _row(table: pa.Table, flight_id: str) -> dict[str, object]:
    rows = table.filter(pc.equal(table["flight_id"], flight_id)).to_pylist()
    assert len(rows) == 1
    return rows[0]


def test_every_flight_has_a_unique_key(flights: pa.Table) -> None:
    assert flights.num_rows == ALL_FLIGHTS
    assert pc.count_distinct(flights["flight_id"]).as_py() == ALL_FLIGHTS


def test_rows_are_sorted_by_key(flights: pa.Table) -> None:
    keys = flights["flight_id"].to_pylist()
    assert keys == sorted(keys)


def test_known_flight_has_its_schedule_and_origin_weather(flights: pa.Table) -> None:
    row = _row(flights, "2013-01-01_UA1545_EWR")
    assert (row["date"], row["dest"], row["sched_dep_time"], row["hour"], row["arr_delay"]) == (
        "2013-01-01",
        "IAH",
        515,
        5,
        11.0,
    )
    assert row["day_of_week"] == 1  # 2013-01-01 was a Tuesday
    assert (row["temp"], row["humid"], row["pressure"], row["wind_gust"]) == (39.02, 64.43, 1011.9, None)


def test_weather_of_the_last_hours_of_the_year_is_joined(flights: pa.Table) -> None:
    assert _row(flights, "2013-12-30_AA1171_LGA")["temp"] == 32.0


def test_rows_with_missing_values_stay_in(flights: pa.Table) -> None:
    assert flights["arr_delay"].null_count == 9_430
    assert flights["temp"].null_count > 0
    assert not any(math.isnan(v) for v in flights["temp"].drop_null().to_pylist())


def test_day_filter_is_inclusive() -> None:
    table = load_flights_table(date(2013, 3, 1), date(2013, 3, 2))
    assert set(table["date"].to_pylist()) == {"2013-03-01", "2013-03-02"}


def test_start_after_end_is_an_input_error() -> None:
    with pytest.raises(InputError, match="swap"):
        load_flights_table(date(2013, 3, 2), date(2013, 3, 1))


def test_write_makes_one_hive_partition_per_day(tmp_path: Path) -> None:
    rows = write_flights(tmp_path, start=date(2013, 1, 1), end=date(2013, 1, 3))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "_labels",
        "date=2013-01-01",
        "date=2013-01-02",
        "date=2013-01-03",
    ]
    part = pq.read_table(tmp_path / "date=2013-01-01" / PARTITION_FILE)
    assert part.column_names == FILE_COLUMNS
    assert part.schema.field("day_of_week").type == pa.int64()
    assert part.schema.field("temp").type == pa.float64()
    assert pads.dataset(tmp_path, partitioning="hive").count_rows() == rows


def test_rewriting_a_day_replaces_it(tmp_path: Path) -> None:
    day = date(2013, 1, 2)
    first = write_flights(tmp_path, start=day, end=day)
    (tmp_path / "date=2013-01-02" / "stale.parquet").write_bytes(b"junk")
    assert write_flights(tmp_path, start=day, end=day) == first
    assert [p.name for p in (tmp_path / "date=2013-01-02").iterdir()] == [PARTITION_FILE]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["_labels", "date=2013-01-02"]


def test_each_day_gets_its_outcomes_as_a_labels_partition(tmp_path: Path) -> None:
    day = date(2013, 7, 1)
    write_flights(tmp_path, start=day, end=day)
    flights = pq.read_table(tmp_path / "date=2013-07-01" / PARTITION_FILE, columns=["flight_id", "arr_delay"])
    labels = pq.read_table(tmp_path / LABELS_DIR / "date=2013-07-01" / PARTITION_FILE)
    assert labels.column_names == ["flight_id", "delayed"] and labels["flight_id"].equals(
        flights["flight_id"]
    )
    for delay, delayed in zip(flights["arr_delay"].to_pylist(), labels["delayed"].to_pylist(), strict=True):
        assert delayed == (None if delay is None else delay > 15)
