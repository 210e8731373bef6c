from __future__ import annotations

import math

import pyarrow as pa
import pytest

from pipelines.core.card import Card
from pipelines.core.validate import check_schema, validate
from pipelines.errors import InputError

CARD = Card.model_validate(
    {
        "name": "toy",
        "version": "1",
        "key": "id",
        "inputs": [
            {"name": "x", "dtype": "float32"},
            {"name": "n", "dtype": "int64"},
            {"name": "c", "dtype": "string"},
        ],
        "outputs": [{"name": "score", "dtype": "float32"}],
        "signatures": {"default": "model.onnx"},
        "artifacts": {"model.onnx": {"sha256": "0" * 64, "bytes": 1}},
    }
)


def _table(**overrides: list) -> pa.Table:
    columns = {"id": ["a", "b", "c"], "x": [1.0, 2.0, 3.0], "n": [1, 2, 3], "c": ["u", "v", "w"]}
    columns.update(overrides)
    return pa.table(columns)


def _reasons(table: pa.Table) -> dict[str | None, str]:
    rejects = validate(table, CARD).rejects
    return dict(zip(rejects["key"].to_pylist(), rejects["reason"].to_pylist(), strict=True))


def test_clean_rows_are_all_good_and_coerced_to_card_dtypes() -> None:
    checked = validate(_table(), CARD)
    assert checked.rejects.num_rows == 0
    assert checked.good.schema.field("x").type == pa.float32()
    assert checked.good["id"].to_pylist() == ["a", "b", "c"]


def test_null_and_nan_features_are_rejected_with_the_column_named() -> None:
    reasons = _reasons(_table(x=[1.0, math.nan, None]))
    assert reasons == {"b": "feature 'x' is NaN", "c": "feature 'x' is null"}


def test_every_occurrence_of_a_duplicate_key_is_rejected() -> None:
    checked = validate(_table(id=["a", "a", "b"]), CARD)
    assert checked.good["id"].to_pylist() == ["b"]
    assert checked.rejects["reason"].to_pylist() == ["duplicate key: it occurs more than once"] * 2


def test_null_empty_and_overlong_keys_are_rejected() -> None:
    reasons = validate(_table(id=[None, "", "k" * 300]), CARD).rejects["reason"].to_pylist()
    assert reasons == ["key is null", "key is empty", "key is longer than 256 characters"]


def test_float64_beyond_float32_range_is_rejected_not_silently_infinite() -> None:
    assert _reasons(_table(x=[1.0, 1e300, 2.0])) == {"b": "feature 'x' does not fit float32"}


def test_good_plus_rejects_equals_rows_in_and_reject_rows_keep_their_values() -> None:
    checked = validate(_table(x=[None, 2.0, math.nan]), CARD)
    assert checked.good.num_rows + checked.rejects.num_rows == 3
    assert '"x": null' in checked.rejects["row"][0].as_py()


def test_missing_key_column_is_one_clear_error() -> None:
    with pytest.raises(InputError, match="has no key column 'id'"):
        check_schema(_table().drop_columns(["id"]).schema, CARD)


def test_missing_input_column_is_one_clear_error() -> None:
    with pytest.raises(InputError, match="lacks model input column"):
        check_schema(_table().drop_columns(["n"]).schema, CARD)


@pytest.mark.parametrize(
    ("column", "values"), [("x", ["1.0", "2", "3"]), ("n", [1.5, 2.0, 3.0]), ("c", [1, 2, 3])]
)
def test_uncoercible_types_are_one_clear_error(column: str, values: list) -> None:
    with pytest.raises(InputError, match=f"column '{column}' has type"):
        check_schema(_table(**{column: values}).schema, CARD)


def test_int_and_dictionary_columns_are_coerced() -> None:
    table = _table(x=pa.array([1, 2, 3], pa.int32()), c=pa.array(["u", "v", "w"]).dictionary_encode())
    checked = validate(table, CARD)
    assert checked.good["x"].to_pylist() == [1.0, 2.0, 3.0]
    assert checked.good["c"].to_pylist() == ["u", "v", "w"]


WIDE = Card.model_validate(
    {
        "name": "wide",
        "version": "1",
        "key": "id",
        "inputs": [
            {"name": "v", "dtype": "float32", "shape": ["N", 3]},
            {"name": "s", "dtype": "float32", "shape": ["N", 2], "columns": ["a", "b"]},
        ],
        "outputs": [{"name": "score", "dtype": "float32"}],
        "signatures": {"default": "model.onnx"},
        "artifacts": {},
    }
)


def test_list_and_stacked_inputs_feed_n_by_k_tensors() -> None:
    from pipelines.core.model import to_feed

    table = pa.table({"id": [1, 2], "v": [[1, 2, 3], [4, 5, 6]], "a": [1, 2], "b": [0.5, 0.25]})
    checked = validate(table, WIDE)
    feed = to_feed(WIDE, checked.good)
    assert checked.good["id"].to_pylist() == ["1", "2"]
    assert feed["v"].dtype == "float32" and feed["v"].tolist() == [[1, 2, 3], [4, 5, 6]]
    assert feed["s"].tolist() == [[1, 0.5], [2, 0.25]]


def test_list_of_the_wrong_length_or_with_a_null_is_rejected() -> None:
    table = pa.table(
        {
            "id": ["a", "b", "c"],
            "v": [[1.0, 2.0], [1.0, None, 3.0], [1.0, 2.0, 3.0]],
            "a": [1, 2, 3],
            "b": [1, 2, 3],
        }
    )
    rejects = validate(table, WIDE).rejects
    reasons = dict(zip(rejects["key"].to_pylist(), rejects["reason"].to_pylist(), strict=True))
    assert reasons == {
        "a": "feature 'v' does not hold exactly 3 values",
        "b": "feature 'v' has a null, NaN or out-of-range value",
    }


def test_fixed_size_list_of_another_width_and_float_keys_are_schema_errors() -> None:
    fixed = pa.FixedSizeListArray.from_arrays(pa.array([1.0, 2.0, 3.0, 4.0]), 2)
    with pytest.raises(InputError, match="lists of 2 values"):
        check_schema(pa.table({"id": ["x", "y"], "v": fixed, "a": [1, 2], "b": [1, 2]}).schema, WIDE)
    with pytest.raises(InputError, match="string, int32 or int64"):
        check_schema(pa.table({"id": [1.5], "v": [[1.0, 2.0, 3.0]], "a": [1], "b": [1]}).schema, WIDE)


def test_string_column_stacked_into_a_float_input_is_a_schema_error() -> None:
    with pytest.raises(InputError, match="column 'a' has type string"):
        check_schema(pa.table({"id": ["x"], "v": [[1.0, 2.0, 3.0]], "a": ["1"], "b": [1]}).schema, WIDE)


def test_good_rows_are_validates_good_rows() -> None:
    from pipelines.core.validate import good_rows

    table = _table(x=[1.0, None, 3.0], id=["a", "a", "c"])
    assert good_rows(table, CARD).equals(validate(table, CARD).good)
    clean = _table()
    assert good_rows(clean, CARD).equals(validate(clean, CARD).good)
