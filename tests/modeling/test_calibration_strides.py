"""Calibration goes to onnxruntime in strides, and the int8 ranges still come from every row."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pyarrow as pa
import pytest
from onnx import TensorProto, helper, numpy_helper

from pipelines.core.card import Card, InputSpec
from pipelines.modeling.quantize import (
    CALIBRATION_BATCH_ROWS,
    CALIBRATION_STRIDE_BATCHES,
    QuantSettings,
    TableCalibrationReader,
    quantize_model,
)

WIDTH = 4
OUTLIER = 1000.0
STRIDE_ROWS = CALIBRATION_BATCH_ROWS * CALIBRATION_STRIDE_BATCHES
CARD = Card(
    name="matmul",
    version="1",
    key="k",
    inputs=[InputSpec(name="x", dtype="float32", shape=["N", WIDTH])],
    outputs=[],
    signatures={},
    artifacts={},
)


@pytest.fixture(scope="module")
def matmul(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``y = x @ I``: the int8 scale of ``x`` is the calibrated range of the input rows / 255."""
    weights = numpy_helper.from_array(np.eye(WIDTH, dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, WIDTH])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, WIDTH])],
        [weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path_factory.mktemp("strides") / "matmul.onnx"
    onnx.save(model, str(path))
    return path


def _rows(count: int, *, outlier_row: int) -> pa.Table:
    x = np.random.default_rng(0).uniform(-1.0, 1.0, (count, WIDTH)).astype(np.float32)
    x[outlier_row, 0] = OUTLIER
    values = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), WIDTH)
    return pa.table({"k": [f"k{i}" for i in range(count)], "x": values})


def _input_scale(path: Path) -> float:
    model = onnx.load(str(path))
    initializers = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    node = next(n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "x")
    return float(initializers[node.input[1]])


@pytest.mark.parametrize(
    ("rows", "outlier_row"),
    [
        (40 * CALIBRATION_BATCH_ROWS, 0),  # the first stride of five
        (2 * STRIDE_ROWS, 0),  # a multiple of the old 16-batch bound: once "No data is collected"
        (3 * STRIDE_ROWS + 100, 3 * STRIDE_ROWS + 99),  # the short last batch, a stride of its own
        (300, 7),  # less than one batch
    ],
)
def test_int8_input_range_covers_every_calibration_row(
    matmul: Path, tmp_path: Path, rows: int, outlier_row: int
) -> None:
    table = _rows(rows, outlier_row=outlier_row)
    settings = QuantSettings(per_channel=False)
    quantize_model(matmul, tmp_path / "int8.onnx", CARD, table, settings)
    low = float(np.min(np.asarray(table.column("x").combine_chunks().values)))
    assert _input_scale(tmp_path / "int8.onnx") == pytest.approx((OUTLIER - low) / 255, rel=1e-5)


def test_strides_hand_every_row_to_the_calibrator_once_in_equal_batches() -> None:
    rows = 2 * STRIDE_ROWS + CALIBRATION_BATCH_ROWS + 5
    reader = TableCalibrationReader(CARD, _rows(rows, outlier_row=0))
    seen = []
    for stride in range(len(reader)):
        reader.set_range(start_index=stride, end_index=stride + 1)
        sizes = {len(feed["x"]) for feed in iter(reader.get_next, None)}
        seen.append(sizes)
    assert seen == [{CALIBRATION_BATCH_ROWS}, {CALIBRATION_BATCH_ROWS}, {CALIBRATION_BATCH_ROWS}, {5}]


def test_percentile_calibration_accepts_rows_that_are_no_multiple_of_a_batch(
    matmul: Path, tmp_path: Path
) -> None:
    # Histogram calibrators stack a stride's outputs into one array: batches of two sizes failed.
    table = _rows(STRIDE_ROWS + 100, outlier_row=0)
    settings = QuantSettings(per_channel=False, calibrate_method="Percentile")
    report = quantize_model(matmul, tmp_path / "int8.onnx", CARD, table, settings)
    assert report["calibration"] == {"rows": STRIDE_ROWS + 100, "method": "Percentile"}
    assert _input_scale(tmp_path / "int8.onnx") > 0
