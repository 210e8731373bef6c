"""Late labels: ground truth per (model, key), bulk-loaded through COPY into a staging table and one merge.

The whole load is one transaction: the file is streamed in Arrow batches as CSV into a temporary
staging table, checked there (binary labels must be 0/1), then merged into ``labels``. A bad file
writes nothing. Loading the same file twice changes nothing: a row whose label and day are
unchanged keeps its ``as_of`` (unless ``--as-of`` is given and differs). Labels for keys the
model never predicted are kept (their prediction may come later, e.g. a backfill) and counted.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.dataset as ds

from pipelines.core.card import Card, load_card
from pipelines.core.model import resolve_version_dir
from pipelines.errors import InputError
from pipelines.settings import Settings
from pipelines.store.cache import cache_url
from pipelines.store.db import connection

#: The hive partition column that gives each label its day when present (``date=YYYY-MM-DD``).
DEFAULT_DAY_COLUMN = "date"
TASKS = ("binary", "multiclass", "regression")
BATCH_ROWS = 65_536

_STAGE_SQL = (
    'CREATE TEMP TABLE labels_stage (key text COLLATE "C", label double precision, day date) ON COMMIT DROP'
)
_MERGE_SQL = """
INSERT INTO labels AS l (model, key, label, day, as_of)
SELECT DISTINCT ON (key) %(model)s, key, label, day, %(as_of)s FROM labels_stage ORDER BY key
ON CONFLICT (model, key) DO UPDATE SET label = EXCLUDED.label, day = EXCLUDED.day, as_of = EXCLUDED.as_of,
    loaded_at = now()
WHERE (l.label, l.day) IS DISTINCT FROM (EXCLUDED.label, EXCLUDED.day)
   OR (%(explicit)s AND l.as_of IS DISTINCT FROM EXCLUDED.as_of)
RETURNING (xmax = 0) AS inserted
"""
_UNPREDICTED_SQL = """
SELECT count(*) FROM (SELECT DISTINCT key FROM labels_stage) s
WHERE NOT EXISTS (
    SELECT 1 FROM predictions p JOIN runs r ON r.run_id = p.run_id WHERE p.key = s.key AND r.model = %s
)
"""


@dataclass(frozen=True)
class LabelLoad:
    """What a load did; ``--json`` prints this."""

    model: str
    rows: int
    keys: int
    inserted: int
    updated: int
    unchanged: int
    null_labels: int
    unpredicted: int
    as_of: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def task_of(card: Card) -> str:
    """The model's task: ``training.task`` of its card (binary, multiclass, regression); binary if unset."""
    task = str(card.training.get("task") or "binary")
    return task if task in TASKS else "binary"


def parse_as_of(text: str | None) -> datetime:
    """``--as-of`` as an aware timestamp (naive means UTC); now when None.

    Raises:
        InputError: the text is not an ISO 8601 timestamp.
    """
    if not text:
        return datetime.now(UTC)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InputError(
            f"--as-of '{text}' is not a timestamp; use ISO 8601, e.g. 2013-07-02T06:00:00+00:00"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _dataset(source: Path) -> ds.Dataset:
    if not source.exists():
        raise InputError(f"labels input {source} does not exist; pass a Parquet/CSV file or a folder of them")
    fmt = "csv" if source.is_file() and source.suffix.lower() == ".csv" else "parquet"
    try:
        return ds.dataset(source, format=fmt, partitioning="hive")
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"labels input {source} is not readable as {fmt} ({exc}); check the file") from exc


def partition_day(source: Path, column: str | None) -> date | None:
    """The day of a single partition passed as the input (``.../date=2013-07-01[/part-0.parquet]``)."""
    if not column:
        return None
    for part in (source.name, source.parent.name):
        prefix = f"{column}="
        if part.startswith(prefix):
            try:
                return date.fromisoformat(part[len(prefix) :])
            except ValueError:
                raise InputError(
                    f"partition '{part}' of {source} is not a YYYY-MM-DD date; rename it"
                ) from None
    return None


def _batches(
    dataset: ds.Dataset, key: str, label: str, day: str | None, fixed_day: date | None
) -> Iterator[pa.Table]:
    columns = [key, label, *([day] if day else [])]
    for batch in dataset.to_batches(columns=columns, batch_size=BATCH_ROWS):
        table = pa.Table.from_batches([batch])
        if day:
            days = _as_day(table[day], day)
        else:
            days = pa.array([fixed_day] * table.num_rows, pa.date32())
        yield pa.table(
            {"key": pc.cast(table[key], pa.string()), "label": _as_float(table[label], label), "day": days}
        )


def _as_float(column: pa.ChunkedArray, name: str) -> pa.ChunkedArray:
    try:
        return pc.cast(column, pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise InputError(
            f"label column '{name}' is not numeric (type {column.type}); labels must be numbers"
        ) from None


def _as_day(column: pa.ChunkedArray, name: str) -> pa.ChunkedArray:
    if pa.types.is_date(column.type):
        return pc.cast(column, pa.date32())
    try:
        if pa.types.is_timestamp(column.type):
            return pc.cast(column, pa.date32())
        return pc.cast(pc.strptime(pc.cast(column, pa.string()), format="%Y-%m-%d", unit="s"), pa.date32())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise InputError(
            f"day column '{name}' holds values that are not YYYY-MM-DD dates; fix the file"
        ) from None


def _csv_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pacsv.write_csv(
        table, sink, write_options=pacsv.WriteOptions(include_header=False, quoting_style="needed")
    )
    return sink.getvalue()


def load_labels(
    settings: Settings,
    *,
    model: str,
    source: Path,
    key: str,
    label: str,
    as_of: str | None = None,
    day_column: str | None = DEFAULT_DAY_COLUMN,
) -> LabelLoad:
    """Load ground truth for ``model`` from ``source`` (Parquet file/folder, hive-partitioned ok, or CSV).

    Args:
        settings: Where the cache and the models are.
        model: A model in the models folder.
        source: The labels file or folder.
        key: Column holding the key the model's predictions are stored under.
        label: Column holding the outcome (0/1 for binary models; null: outcome unknown).
        as_of: When the outcomes were known (ISO 8601); default now. Evaluation compares each label
            with the prediction that was served at that moment.
        day_column: Column giving the day each outcome belongs to (used if present).

    Returns:
        Counts of the load.

    Raises:
        PredcacheError: unknown model, unreadable input, missing columns, non-binary labels for a
            binary model, unparsable timestamps or days. Nothing is written then.
    """
    card = load_card(resolve_version_dir(settings.models_dir, model))
    moment = parse_as_of(as_of)
    dataset = _dataset(source)
    names = dataset.schema.names
    missing = [name for name in (key, label) if name not in names]
    if missing:
        raise InputError(
            f"labels input {source} has no column {', '.join(repr(m) for m in missing)}; "
            f"it has: {', '.join(names)} (choose them with --key and --label)"
        )
    day = day_column if day_column and day_column in names else None
    fixed_day = None if day else partition_day(source, day_column)
    with connection(cache_url(settings)) as conn:
        conn.execute(_STAGE_SQL)
        rows = 0
        with conn.cursor().copy("COPY labels_stage (key, label, day) FROM STDIN (FORMAT csv)") as copy:
            for table in _batches(dataset, key, label, day, fixed_day):
                rows += table.num_rows
                copy.write(_csv_bytes(table))
        stats = conn.execute(
            "SELECT count(DISTINCT key), count(*) FILTER (WHERE label IS NULL), "
            "count(*) FILTER (WHERE label IS NOT NULL AND label NOT IN (0, 1)), "
            "count(*) FILTER (WHERE key IS NULL) FROM labels_stage"
        ).fetchone()
        assert stats is not None
        keys, nulls, non_binary, null_keys = (int(v) for v in stats)
        if null_keys:
            raise InputError(
                f"labels input {source} has {null_keys} row(s) without a key in '{key}'; fix the file"
            )
        if task_of(card) == "binary" and non_binary:
            raise InputError(
                f"model {model} is binary but {non_binary} label(s) in '{label}' are not 0 or 1; "
                "map the outcomes to 0/1 (null for unknown)"
            )
        unpredicted = int(conn.execute(_UNPREDICTED_SQL, (model,)).fetchone()[0])  # type: ignore[index]
        merged = conn.execute(
            _MERGE_SQL, {"model": model, "as_of": moment, "explicit": bool(as_of)}
        ).fetchall()
        conn.execute("ANALYZE labels")  # evaluation plans its join on these statistics
    inserted = sum(1 for (new,) in merged if new)
    return LabelLoad(
        model=model,
        rows=rows,
        keys=keys,
        inserted=inserted,
        updated=len(merged) - inserted,
        unchanged=keys - len(merged),
        null_labels=nulls,
        unpredicted=unpredicted,
        as_of=moment.isoformat(),
    )
