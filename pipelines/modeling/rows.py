"""Calibration and holdout rows of an import: read only the needed columns, check them, keep the valid ones.

The rows are validated and coerced exactly as the scorer does it (``core.validate``), so the int8
ranges, the gate and the reference statistics see what scoring will see.
"""

from __future__ import annotations

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


def _read(source: Source, columns: list[str], *, what: str) -> pa.Table:
    if isinstance(source, pa.Table):
        missing = [c for c in columns if c not in source.column_names]
        if missing:
            raise InputError(f"the {what} rows lack column(s) {', '.join(missing)}")
        return source.select(columns)
    try:
        handle = pq.ParquetFile(source)
        return handle.read(columns=columns)
    except (pa.ArrowException, OSError) as exc:
        detail = one_line(exc)
        raise InputError(f"the {what} file {source} cannot be read as Parquet ({detail})") from exc


def _schema(source: Source, *, what: str) -> pa.Schema:
    if isinstance(source, pa.Table):
        return source.schema
    try:
        return pq.ParquetFile(source).schema_arrow
    except (pa.ArrowException, OSError) as exc:
        detail = one_line(exc)
        raise InputError(f"the {what} file {source} cannot be read as Parquet ({detail})") from exc


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
    source: Source, draft: Card, *, label_column: str | None, what: str
) -> tuple[pa.Table, np.ndarray | None]:
    """Valid rows (coerced as the scorer coerces them) and their true labels when asked for."""
    _check_columns(_schema(source, what=what), draft, label_column, what=what)
    wanted = [draft.key, *draft.columns]
    if label_column is not None and label_column not in wanted:
        wanted.append(label_column)
    table = _read(source, wanted, what=what)
    checked = validate(table, draft)
    good = checked.good
    if label_column is None:
        return good, None
    keys = table.column(draft.key).cast(pa.string())
    positions = pc.index_in(good.column(draft.key), value_set=keys)
    labels = table.column(label_column).take(positions)
    keep = pc.is_valid(labels)
    return good.filter(keep), labels.filter(keep).to_numpy(zero_copy_only=False)
