"""Static (calibrated) QDQ int8 quantization of a model's MatMul/Gemm layers.

Static, not dynamic: dynamic quantization computes activation scales per batch, so a key's score
would depend on which rows share its batch. With scales fixed at calibration time a row's int8
score is the same at any batch size. Only MatMul/Gemm are quantized; the featurization ops
(ai.onnx.ml OneHotEncoder, Scaler, ...) stay float.

Calibration memory (read in onnxruntime 1.31's ``quantization/calibrate.py``): the calibrator runs
a copy of the graph with extra outputs on each batch the reader gives and keeps those outputs until
its ``collect_data`` returns.

* MinMax adds a ReduceMin and a ReduceMax (over every axis, ``keepdims``) behind each calibrated
  tensor, so what it keeps per batch is two numbers per tensor, not activations: its memory never
  grew with rows x activation width. ``CalibMaxIntermediateOutputs``, which this module used to set,
  bounds only that list of numbers, and it does so by *dropping* the held batches without merging
  their ranges (``clear_collected_data`` with no ``compute_data``; the fix, onnxruntime PR 20226, was
  never merged): at 16, of the 88 batches of a 100k-row import only the last 8 set the ranges, and
  a multiple of 16 batches raised "No data is collected".
* Percentile, Entropy and Distribution add every calibrated tensor itself as an output and keep all
  of them, for every batch, until ``collect_data`` ends (``CalibMaxIntermediateOutputs`` is ignored),
  then copy them once more into one array to histogram: rows x (sum of activation widths) x 4 bytes,
  twice (an MLP with hidden layers (512, 512), Percentile: 1,532 MB peak at 102,400 rows, 373 MB at
  10,240); and they failed outright when the last batch was shorter than the others.

So the rows go to the calibrator in strides: the reader counts strides of
``CALIBRATION_STRIDE_BATCHES`` batches, and ``CalibStridedMinMax=1`` (despite its name, honoured for
every method) makes ``quantize_static`` call ``collect_data`` once per stride. After each stride
MinMax merges its ranges (min of minima, max of maxima: exactly the ranges of all rows) and the
histogram methods add the stride to their histograms (bins set by the first stride, widened as
needed, so their ranges may differ slightly from one pass over every row), then both drop the
stride's outputs. Memory is bounded by one stride whatever the rows (the same MLP, Percentile: 389 MB
peak at 100,000 rows, 362 MB at 10,000; ``benchmarks/calibration_memory.py``).
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quant_pre_process,
    quantize_static,
)

from pipelines.core.card import Card
from pipelines.core.model import to_feed
from pipelines.errors import one_line

METHOD = "static QDQ int8"
CALIBRATION_BATCH_ROWS = 1_024
#: Calibration batches per stride (see the module docstring): the histogram methods hold one stride's
#: activations, 8,192 rows x (sum of activation widths) x 4 bytes; MinMax holds two numbers per tensor.
CALIBRATION_STRIDE_BATCHES = 8
QUANTIZED_OP_TYPES = ("MatMul", "Gemm")

IntType = Literal["QUInt8", "QInt8"]


@dataclass(frozen=True)
class QuantSettings:
    """One way to quantize; ``describe()`` is what the card records.

    Attributes:
        activation_type: Integer type of activations (QUInt8 is the native x86 path without VNNI).
        weight_type: Integer type of weights.
        per_channel: One scale per output channel of each weight instead of one per tensor.
        reduce_range: 7-bit weights, which avoids int16 saturation of the AVX2 u8*s8 kernel.
        calibrate_method: How activation ranges are taken from the calibration rows.
        pre_process: Run onnxruntime's quant_pre_process (shape inference and graph cleanup) first.
    """

    activation_type: IntType = "QUInt8"
    weight_type: IntType = "QInt8"
    per_channel: bool = True
    reduce_range: bool = False
    calibrate_method: Literal["MinMax", "Percentile", "Entropy"] = "MinMax"
    pre_process: bool = True

    @property
    def label(self) -> str:
        """Short name, e.g. ``U8S8 per-channel``."""
        kinds = {"QUInt8": "U8", "QInt8": "S8"}
        parts = [kinds[self.activation_type] + kinds[self.weight_type]]
        parts.append("per-channel" if self.per_channel else "per-tensor")
        if self.reduce_range:
            parts.append("reduce-range")
        return " ".join(parts)

    def describe(self) -> dict[str, Any]:
        return {"label": self.label, **asdict(self)}


class TableCalibrationReader(CalibrationDataReader):  # type: ignore[misc]
    """Feeds fixed calibration rows to the calibrator in batches, one stride at a time.

    ``len()`` is the number of strides; ``set_range(i, j)`` selects strides ``i`` to ``j - 1``, which
    ``quantize_static`` does before each ``collect_data`` when ``CalibStridedMinMax`` is 1. A stride
    is up to ``stride_batches`` full batches; a last, shorter batch is a stride of its own, because
    the histogram methods stack a stride's outputs into one array and refuse batches of two sizes.
    A feed is built from a zero-copy slice of the table, exactly as the scorer builds its feeds,
    only when the calibrator asks for it.
    """

    def __init__(
        self,
        card: Card,
        table: pa.Table,
        *,
        batch_rows: int = CALIBRATION_BATCH_ROWS,
        stride_batches: int = CALIBRATION_STRIDE_BATCHES,
    ) -> None:
        self._card = card
        self._table = table
        self._batch_rows = batch_rows
        full = table.num_rows - table.num_rows % batch_rows
        stride_rows = batch_rows * stride_batches
        bounds = [(start, min(start + stride_rows, full)) for start in range(0, full, stride_rows)]
        if full < table.num_rows or not bounds:
            bounds.append((full, table.num_rows))
        self._strides = bounds
        self._start, self._end = 0, table.num_rows

    def __len__(self) -> int:
        return len(self._strides)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._start = self._strides[start_index][0]
        self._end = self._strides[end_index - 1][1]

    def get_next(self) -> dict[str, Any] | None:
        if self._start >= self._end:
            return None
        batch = self._table.slice(self._start, min(self._batch_rows, self._end - self._start))
        self._start += self._batch_rows
        return to_feed(self._card, batch)


def quantize_model(
    fp32_path: Path, int8_path: Path, card: Card, calibration: pa.Table, settings: QuantSettings
) -> dict[str, Any]:
    """Write the static QDQ int8 version of ``fp32_path`` to ``int8_path``.

    Args:
        fp32_path: The float model.
        int8_path: Where the quantized model goes.
        card: A card whose ``inputs`` describe the graph inputs (used to build the feeds).
        calibration: Rows the activation ranges are taken from; valid inputs, fixed for determinism.
        settings: Quantization types and options.

    Returns:
        The card's record of how the model was quantized (method, settings, calibration, op types).
    """
    report: dict[str, Any] = {
        "method": METHOD,
        "format": "QDQ",
        **settings.describe(),
        "op_types": list(QUANTIZED_OP_TYPES),
        "calibration": {"rows": calibration.num_rows, "method": settings.calibrate_method},
        "pre_process": "off",
    }
    with tempfile.TemporaryDirectory(prefix="predcache-quant-") as scratch:
        source = fp32_path
        if settings.pre_process:
            source, report["pre_process"] = _pre_process(fp32_path, Path(scratch) / "pre.onnx")
        quantize_static(
            str(source),
            str(int8_path),
            TableCalibrationReader(card, calibration),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType[settings.activation_type],
            weight_type=QuantType[settings.weight_type],
            per_channel=settings.per_channel,
            reduce_range=settings.reduce_range,
            op_types_to_quantize=list(QUANTIZED_OP_TYPES),
            calibrate_method=CalibrationMethod[settings.calibrate_method],
            extra_options={"CalibStridedMinMax": 1},
        )
    return report


def _pre_process(fp32_path: Path, out_path: Path) -> tuple[Path, str]:
    # Symbolic shape inference needs sympy and knows no ai.onnx.ml ops; ONNX shape inference suffices.
    try:
        quant_pre_process(str(fp32_path), str(out_path), skip_symbolic_shape=True)
    except Exception as exc:  # onnxruntime raises untyped errors; quantizing without it still works
        return fp32_path, f"skipped: {type(exc).__name__}: {one_line(exc)}"
    return out_path, "done (skip_symbolic_shape=True)"
