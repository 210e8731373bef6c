"""Calibration rows read and validated in batches are the rows validating the whole file would keep."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from pipelines.core.card import Card, InputSpec
from pipelines.core.validate import validate
from pipelines.errors import InputError
from pipelines.modeling.rows import usable_rows
from pipelines.modeling.scoring import score_rows
from tests import byom

DRAFT = Card(
    name="m",
    version="1",
    key="id",
    inputs=[InputSpec(name="X", dtype="float32", shape=["N", 4], columns=byom.FEATURES)],
    outputs=[],
    signatures={},
    artifacts={},
)


def _messy(rows: int) -> pa.Table:
    """Rows with a key repeated far apart, a key repeated next to itself, a NaN feature, a null
    key and null labels."""
    table = byom.rows(rows, seed=3).select(["id", *byom.FEATURES, "y"])
    keys = table["id"].to_pylist()
    keys[rows - 1] = keys[2]  # the same key in the first and the last batch
    keys[11] = keys[10]
    keys[20] = None
    f0 = table["f0"].to_numpy().copy()
    f0[30] = np.nan
    y = table["y"].to_pylist()
    y[40] = y[41] = None
    return (
        table.set_column(0, "id", pa.array(keys, pa.string()))
        .set_column(1, "f0", pa.array(f0, from_pandas=False))
        .set_column(table.schema.get_field_index("y"), "y", pa.array(y, pa.int64()))
    )


def _whole_file(table: pa.Table) -> tuple[pa.Table, np.ndarray]:
    good = validate(table, DRAFT).good
    labels = table["y"].take(pc.index_in(good["id"], value_set=table["id"]))
    known = pc.is_valid(labels)
    return good.filter(known), labels.filter(known).to_numpy(zero_copy_only=False)


@pytest.mark.parametrize("batch_rows", [7, 64, 10_000])
def test_batches_keep_exactly_the_rows_and_labels_of_the_whole_file(tmp_path: Path, batch_rows: int) -> None:
    table = _messy(300)
    path = tmp_path / "calibration.parquet"
    pq.write_table(table, path, row_group_size=50)
    good, truth = usable_rows(path, DRAFT, label_column="y", what="calibration", batch_rows=batch_rows)
    want_good, want_truth = _whole_file(table)
    rejected = 4 + 1 + 1 + 2  # repeated keys, a null key, a NaN, null labels
    assert good.num_rows == want_good.num_rows == 300 - rejected
    assert truth is not None and good.equals(want_good) and np.array_equal(truth, want_truth)


def test_an_empty_file_has_no_usable_rows(tmp_path: Path) -> None:
    path = tmp_path / "empty.parquet"
    pq.write_table(_messy(300).slice(0, 0), path)
    good, truth = usable_rows(path, DRAFT, label_column="y", what="calibration")
    assert good.num_rows == 0 and truth is not None and len(truth) == 0


def test_an_unreadable_file_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"PAR1 not really")
    with pytest.raises(InputError, match="cannot be read as Parquet"):
        usable_rows(path, DRAFT, label_column=None, what="calibration")


def test_batched_scores_equal_scoring_everything_at_once(tmp_path: Path) -> None:
    from pipelines.core.model import predict_outputs
    from pipelines.core.outputs import score_values
    from pipelines.modeling.gate import open_session
    from pipelines.modeling.graph import unwrap_zipmap

    model = byom.sklearn_classifier(byom.rows(500, seed=5))
    unwrap_zipmap(model)
    path = byom.save(model, tmp_path / "clf.onnx")
    outputs = [
        {"name": "output_label", "dtype": "int64", "shape": ["N"]},
        {"name": "output_probability", "dtype": "float32", "shape": ["N", 2]},
    ]
    score = {"output": "output_probability", "index": 1}
    card = Card.model_validate(
        {**DRAFT.model_dump(), "outputs": outputs, "score": score, "label": "output_label"}
    )
    table = validate(byom.rows(1_000, seed=6), card).good
    session = open_session(path)
    scored = score_rows(session, card, table, batch_rows=64)
    whole = predict_outputs(session, card, table, batch_rows=64)
    assert np.array_equal(scored.score, score_values(card, whole).astype(np.float64))
    assert scored.label is not None and np.array_equal(scored.label, whole["output_label"])
