"""Requests read together into one table get exactly the table each gets when read alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.api.errors import UnprocessableRowsError
from pipelines.api.rows import RowReader
from pipelines.core.model import load_model

#: What JSON can carry for the toy model's inputs x (float32) and n (int64), lone surrogates
#: and integers beyond int64 included.
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    st.text(max_size=2),
    st.lists(st.floats(), max_size=2),
)
ROWS = st.lists(st.fixed_dictionaries({"x": VALUES, "n": VALUES}), min_size=1, max_size=3)


@pytest.fixture(scope="module")
def reader(tmp_path_factory: pytest.TempPathFactory, toy_model_builder: Any) -> RowReader:
    models: Path = tmp_path_factory.mktemp("models")
    toy_model_builder(models)
    return RowReader(load_model(models, "toy", "1"))


def _alone(reader: RowReader, rows: list[dict[str, Any]]) -> pa.Table | str:
    try:
        return reader.table(rows)
    except UnprocessableRowsError as exc:
        return str(exc)


def _same(a: pa.Table, b: pa.Table) -> bool:
    """Equal schemas and values, bit for bit (repr keeps NaN, -0.0 and every float digit)."""
    return bool(a.schema == b.schema) and repr(a.to_pylist()) == repr(b.to_pylist())


@settings(max_examples=300, deadline=None)
@given(st.lists(ROWS, min_size=1, max_size=5))
def test_each_request_read_with_others_gets_the_table_or_refusal_it_gets_alone(
    reader: RowReader, requests: list[list[dict[str, Any]]]
) -> None:
    requests = [
        [{"key": f"r{i}-{j}", **row} for j, row in enumerate(rows)] for i, rows in enumerate(requests)
    ]
    batches, refused = reader.read(requests)
    for i, rows in enumerate(requests):
        alone = _alone(reader, rows)
        if i in refused:
            assert str(refused[i]) == alone
            continue
        (batch,) = [batch for batch in batches if i in batch.members]
        offset = sum(len(requests[m]) for m in batch.members[: batch.members.index(i)])
        assert not isinstance(alone, str)
        assert _same(batch.table.slice(offset, len(rows)), alone)
    assert sorted([*refused, *(m for batch in batches for m in batch.members)]) == list(range(len(requests)))


def test_a_key_in_two_requests_puts_them_in_two_tables(reader: RowReader) -> None:
    requests = [
        [{"key": "k", "x": 1.0, "n": 1}],
        [{"key": "k", "x": 2.0, "n": 2}],
        [{"key": "j", "x": 3.0, "n": 3}],
    ]
    batches, refused = reader.read(requests)
    assert [batch.members for batch in batches] == [[0, 2], [1]] and refused == {}


def test_a_lone_surrogate_is_refused_with_a_reason_and_only_for_its_request(reader: RowReader) -> None:
    requests = [[{"key": "a", "x": 1.0, "n": 1}], [{"key": "b", "x": "\ud800", "n": 1}]]
    batches, refused = reader.read(requests)
    assert [batch.members for batch in batches] == [[0]]
    assert "not valid Unicode" in str(refused[1])


def test_an_int_beyond_int64_is_refused_only_for_its_request(reader: RowReader) -> None:
    requests = [[{"key": "a", "x": 1.0, "n": 1}], [{"key": "b", "x": 2.0, "n": 2**63}]]
    batches, refused = reader.read(requests)
    assert [batch.members for batch in batches] == [[0]]
    assert str(refused[1]) == _alone(reader, requests[1])
