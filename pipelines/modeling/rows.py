"""Calibration and holdout rows of an import: read only the needed columns, check them, keep the valid ones.

The rows are validated and coerced exactly as the scorer does it (``core.validate``), so the int8
ranges, the gate and the reference statistics see what scoring will see. The file is read and
validated ``READ_BATCH_ROWS`` rows at a time: memory holds the valid rows (coerced, in Arrow), every
row's key (to find keys repeated across batches) and one batch of raw columns, not the whole file as
read plus its validation's intermediate arrays. A Parquet reader decodes a whole row group at a
time, so a file written as one row group (pyarrow's default up to 1Mi rows) costs about twice that
row group's columns (measured on 100k rows of 18 columns: Arrow's peak 49 MB; 7 MB in 10k-row groups).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TypeAlias

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.core.card import Card
from pipelines.core.validate import check_schema, validate
from pipelines.errors import InputError, one_line

#: A Parquet file, or rows already in memory (recipes).
Source: TypeAlias = "Path | pa.Table"
#: Rows read and validated at a time. Reading 100k rows of 18 columns in row groups of 10k, Arrow's
#: peak was 7 MB at 8,192 rows a batch, 21 MB at 65,536, 15 MB for the whole file at once.
READ_BATCH_ROWS = 8_192


def _unreadable(source: Path, exc: BaseException, *, what: str) -> InputError:
    return InputError(f"the {what} file {source} cannot be read as Parquet ({one_line(exc)})")


def _batches(source: Source, columns: list[str], *, what: str, batch_rows: int) -> Iterator[pa.Table]:
    """``columns`` of the rows, ``batch_rows`` at a time; one empty table when there are no rows."""
    if isinstance(source, pa.Table):
        missing = [c for c in columns if c not in source.column_names]
        if missing:
            raise InputError(f"the {what} rows lack column(s) {', '.join(missing)}")
        selected = source.select(columns)
        batches = selected.to_batches(max_chunksize=batch_rows)
        yield from (pa.Table.from_batches([b]) for b in batches) if batches else [selected]
        return
    try:
        # pre_buffer reads a whole row group's bytes ahead: it pays off on object stores, not on disk.
        handle = pq.ParquetFile(source, pre_buffer=False)
        empty = True
        for batch in handle.iter_batches(batch_size=batch_rows, columns=columns):
            empty = False
            yield pa.Table.from_batches([batch])
        if empty:
            yield handle.schema_arrow.empty_table().select(columns)
    except (pa.ArrowException, OSError) as exc:
        raise _unreadable(source, exc, what=what) from exc


def _schema(source: Source, *, what: str) -> pa.Schema:
    if isinstance(source, pa.Table):
        return source.schema
    try:
        return pq.ParquetFile(source).schema_arrow
    except (pa.ArrowException, OSError) as exc:
        raise _unreadable(source, exc, what=what) from exc


def _check_columns(schema: pa.Schema, draft: Card, label_column: str | None, *, what: str) -> None:
    names = set(schema.names)
    if draft.key not in names:
        raise InputError(f"the {what} file has no key column '{draft.key}'; pass the right --key")
    for spec in draft.inputs:
        if spec.columns is None and spec.name not in names:
            raise InputError(
                f"graph input '{spec.name}' has no column of that name in the {what} file; name the "
                f"columns to stack into it with --columns {spec.name}=COLUMN1,COLUMN2,..."
            )
        for column in spec.columns or []:
            if column not in names:
                raise InputError(
                    f"--columns {spec.name}= names column '{column}', missing from the {what} file"
                )
    if label_column is not None and label_column not in names:
        raise InputError(f"--label-column '{label_column}' is not a column of the {what} file")
    check_schema(schema, draft, source=f"the {what} file")


def usable_rows(
    source: Source,
    draft: Card,
    *,
    label_column: str | None,
    what: str,
    batch_rows: int = READ_BATCH_ROWS,
) -> tuple[pa.Table, np.ndarray | None]:
    """Valid rows (coerced as the scorer coerces them) and their true labels when asked for.

    Each batch is validated on its own; a key that occurs in more than one batch is then rejected
    everywhere, as ``validate`` rejects every occurrence of a key repeated within one table. Rows
    whose label is null are left out when labels are asked for.
    """
    _check_columns(_schema(source, what=what), draft, label_column, what=what)
    wanted = [draft.key, *draft.columns]
    if label_column is not None and label_column not in wanted:
        wanted.append(label_column)
    goods: list[pa.Table] = []
    keys: list[pa.Array] = []
    labels: list[pa.Array] = []
    for table in _batches(source, wanted, what=what, batch_rows=batch_rows):
        good = validate(table, draft).good
        batch_keys = table.column(draft.key).cast(pa.string()).combine_chunks()
        keys.append(batch_keys)
        goods.append(good)
        if label_column is not None:
            positions = pc.index_in(good.column(draft.key), value_set=batch_keys)
            labels.append(table.column(label_column).take(positions).combine_chunks())
    good = pa.concat_tables(goods)
    repeated = _repeated(pa.chunked_array(keys, pa.string()))
    keep = pc.invert(pc.is_in(good.column(draft.key), value_set=repeated)) if len(repeated) else None
    if keep is not None:
        good = good.filter(keep)
    if label_column is None:
        return good, None
    truth = pa.concat_arrays(labels)
    if keep is not None:
        truth = truth.filter(keep.combine_chunks())
    known = pc.is_valid(truth)
    return good.filter(known), truth.filter(known).to_numpy(zero_copy_only=False)


def _repeated(keys: pa.ChunkedArray) -> pa.Array:
    """Keys that occur more than once."""
    counts = pa.table({"k": keys}).group_by("k").aggregate([("k", "count")])
    return counts.filter(pc.greater(counts["k_count"], 1))["k"].combine_chunks()
