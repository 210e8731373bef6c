"""JSON rows of online requests as the Arrow tables a batch shard would hold.

Fields that are not model inputs are ignored (as in batch). Each input column's Arrow type is
inferred from the request's own JSON values, then held to the batch's schema rules
(``core.validate.check_schema``): a number where a string is expected, or a string where a
number is expected, is refused. A request's types are the ones it would get alone, whatever
it is batched with, so its table (and so its answer) does not depend on its neighbours.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
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
Rows = list[dict[str, Any]]

#: Python types of a column's values for which pyarrow infers the Arrow type from the set of
#: types alone: strings (string), ints (int64), ints and floats (double), floats (double),
#: booleans (bool); nulls beside any of them. Requests whose columns hold the same such sets
#: (nulls aside) get, read together, the types each gets alone. (An int beyond int64 is an
#: error, never another type: a table read together that fails is read again request by request.)
_SIMPLE_TYPES = frozenset(frozenset(types) for types in ({str}, {int}, {float}, {int, float}, {bool}))
_NULL = type(None)


@dataclass(frozen=True)
class ReadBatch:
    """Requests (their indices) read into one table: same column types, no key in common."""

    members: list[int]
    table: pa.Table


@dataclass
class _Group:
    shape: tuple[str, Hashable]
    keys: set[str] = field(default_factory=set)
    members: list[int] = field(default_factory=list)
    tables: list[pa.Table] = field(default_factory=list)


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
            except UnicodeEncodeError:  # JSON can carry a lone surrogate (\\ud800), UTF-8 cannot
                raise UnprocessableRowsError(
                    f"field '{name}' holds a string that is not valid Unicode (a lone surrogate); "
                    "fix the string"
                ) from None
            if pa.types.is_null(column.type):  # every value null: typed as the model wants, rejected per row
                column = pa.nulls(len(values), self._null_types[name])
            columns[name] = column
        table = pa.table(columns)
        refusal = self._refusal(table.schema)
        if refusal is not None:
            raise UnprocessableRowsError(refusal)
        return table

    def read(self, requests: list[Rows]) -> tuple[list[ReadBatch], dict[int, UnprocessableRowsError]]:
        """Several requests as few tables as possible; a refused request is refused alone.

        Requests share a table when their columns have the same Arrow types and no key is in
        two of them (validation rejects every occurrence of a repeated key; apart, each request
        is validated exactly as if it came alone). Requests with the same simple value types
        (``_SIMPLE_TYPES``) are read in one pass over all their rows; any other request is
        read alone first, to learn its types, and shares only with requests of the same schema.

        Returns:
            The tables with the requests each holds, and the refusal of each refused request.
        """
        refused: dict[int, UnprocessableRowsError] = {}
        groups: list[_Group] = []
        for i, rows in enumerate(requests):
            types = self._value_types(rows)
            table = None
            shape: tuple[str, Hashable] = ("types", types)
            if types is None:
                try:
                    table = self.table(rows)
                except UnprocessableRowsError as exc:
                    refused[i] = exc
                    continue
                shape = ("schema", table.schema)
            keys = {row[ROW_KEY] for row in rows}
            group = next((g for g in groups if g.shape == shape and g.keys.isdisjoint(keys)), None)
            if group is None:
                group = _Group(shape)
                groups.append(group)
            group.keys |= keys
            group.members.append(i)
            if table is not None:
                group.tables.append(table)
        batches: list[ReadBatch] = []
        for group in groups:
            if group.tables:
                batches.append(ReadBatch(group.members, pa.concat_tables(group.tables).combine_chunks()))
                continue
            try:
                batches.append(
                    ReadBatch(group.members, self.table([r for i in group.members for r in requests[i]]))
                )
            except UnprocessableRowsError:  # one of them is refused (an int beyond int64, a bad string)
                for i in group.members:
                    try:
                        batches.append(ReadBatch([i], self.table(requests[i])))
                    except UnprocessableRowsError as exc:
                        refused[i] = exc
        return batches, refused

    def _value_types(self, rows: Rows) -> tuple[frozenset[type], ...] | None:
        """Per input column, the Python types of the values when they are simple; else None.

        None too when a row lacks a field (``table`` names the row) or a column is all null
        (typed from the card, per request).
        """
        types: list[frozenset[type]] = []
        for name in self._columns:
            try:
                values = [row[name] for row in rows]
            except KeyError:
                return None
            known = frozenset(map(type, values)) - {_NULL}  # nulls do not change an inferred type
            if known not in _SIMPLE_TYPES:  # an all-null column is not either
                return None
            types.append(known)
        return tuple(types)

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
