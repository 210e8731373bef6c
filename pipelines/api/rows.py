"""JSON rows of an online request as the Arrow table a batch shard would hold.

Fields that are not model inputs are ignored (as in batch). Each input column's Arrow type is
inferred from the request's own JSON values, then held to the batch's schema rules
(``core.validate.check_schema``): a number where a string is expected, or a string where a
number is expected, is refused. Types are inferred per request, never across requests, so a
request's table (and so its answer) does not depend on what it is batched with.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from pipelines.api.errors import UnprocessableRowsError
from pipelines.core.model import Model, arrow_type
from pipelines.core.validate import check_schema
from pipelines.errors import InputError

#: The key field of a row (whatever the model's key column is called).
ROW_KEY = "key"
#: Schemas whose check is remembered per model (requests repeat a handful of them).
MAX_REMEMBERED_SCHEMAS = 64


class RowReader:
    """Builds one model's input tables from JSON rows; what depends only on the model is done once."""

    def __init__(self, model: Model) -> None:
        card = model.card
        self._card = card
        self._columns = card.columns
        self._null_types = {name: _input_type(model, name) for name in self._columns}
        self._refusals: dict[pa.Schema, str | None] = {}

    def table(self, rows: list[dict[str, Any]]) -> pa.Table:
        """The card's key column and input columns of ``rows`` (each row a dict with a string key).

        Raises:
            UnprocessableRowsError: a row lacks a model input, or a field has a type the model
                cannot take without guessing.
        """
        columns: dict[str, pa.Array] = {self._card.key: pa.array([row[ROW_KEY] for row in rows], pa.string())}
        for name in self._columns:
            try:
                values = [row[name] for row in rows]
            except KeyError:
                first = next(i for i, row in enumerate(rows) if name not in row)
                raise UnprocessableRowsError(
                    f"rows[{first}] has no field '{name}'; every row needs each model input "
                    f"({', '.join(self._columns)}); send null for a missing value"
                ) from None
            try:
                column = pa.array(values)
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
                raise UnprocessableRowsError(
                    f"field '{name}' mixes value types across rows; send every '{name}' as the same JSON type"
                ) from None
            if pa.types.is_null(column.type):  # every value null: typed as the model wants, rejected per row
                column = pa.nulls(len(values), self._null_types[name])
            columns[name] = column
        table = pa.table(columns)
        refusal = self._refusal(table.schema)
        if refusal is not None:
            raise UnprocessableRowsError(refusal)
        return table

    def _refusal(self, schema: pa.Schema) -> str | None:
        """Why ``check_schema`` refuses ``schema`` (None: accepted), remembered per schema."""
        if schema not in self._refusals:
            if len(self._refusals) >= MAX_REMEMBERED_SCHEMAS:
                self._refusals.clear()
            try:
                check_schema(schema, self._card, source="rows")
                self._refusals[schema] = None
            except InputError as exc:
                self._refusals[schema] = str(exc)
        return self._refusals[schema]


def _input_type(model: Model, name: str) -> pa.DataType:
    """The Arrow type the card feeds column ``name`` as (a list type for a list-fed input)."""
    spec = next(spec for spec in model.card.inputs if name in spec.source_columns)
    return pa.list_(arrow_type(spec.dtype)) if spec.is_list else arrow_type(spec.dtype)
