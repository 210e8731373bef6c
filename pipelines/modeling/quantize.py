"""Static (calibrated) QDQ int8 quantization of a model's MatMul/Gemm layers.

Static, not dynamic: dynamic quantization computes activation scales per batch, so a key's score
would depend on which rows share its batch. With scales fixed at calibration time a row's int8
score is the same at any batch size. Only MatMul/Gemm are quantized; the featurization ops
(ai.onnx.ml OneHotEncoder, Scaler, ...) stay float.
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
#: Calibration batches whose activations are held before their ranges are merged (MinMax merges
#: exactly), so 100k calibration rows need the memory of 16k, not of 100k.
CALIBRATION_STRIDE_BATCHES = 16
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
    """Feeds fixed calibration rows to the calibrator in batches, exactly as the scorer feeds them."""

    def __init__(self, card: Card, table: pa.Table, *, batch_rows: int = CALIBRATION_BATCH_ROWS) -> None:
        self._card = card
        self._table = table
        self._batch_rows = batch_rows
        self._start = 0

    def get_next(self) -> dict[str, Any] | None:
        if self._start >= self._table.num_rows:
            return None
        batch = self._table.slice(self._start, self._batch_rows)
        self._start += self._batch_rows
        return to_feed(self._card, batch)

    def rewind(self) -> None:
        self._start = 0


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
            extra_options={"CalibMaxIntermediateOutputs": CALIBRATION_STRIDE_BATCHES},
        )
    return report


def _pre_process(fp32_path: Path, out_path: Path) -> tuple[Path, str]:
    # Symbolic shape inference needs sympy and knows no ai.onnx.ml ops; ONNX shape inference suffices.
    try:
        quant_pre_process(str(fp32_path), str(out_path), skip_symbolic_shape=True)
    except Exception as exc:  # onnxruntime raises untyped errors; quantizing without it still works
        return fp32_path, f"skipped: {type(exc).__name__}: {one_line(exc)}"
    return out_path, "done (skip_symbolic_shape=True)"
