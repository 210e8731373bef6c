"""``predcache models import``: any exported ONNX model becomes an immutable, gated model version.

One door for every model (the reference model's recipe trains, exports, then calls
``write_imported`` too). The version folder is written in a dot-folder beside its final place and
renamed when complete, so readers never see half a version and a failed import leaves the models
folder as it was; an existing version is never overwritten.

What an import writes: ``model.onnx`` (the graph as given, a ZipMap output unwrapped into its
probability tensor), ``model.int8.onnx`` (static calibrated QDQ int8, when the graph has MatMul/Gemm
ops), and ``card.json`` (inputs and how each is fed, outputs, key, score designation, signatures,
checksums, the gate and reference statistics from the calibration rows).

Memory: the calibration and holdout files are read and validated in batches (``rows``), and only
their valid rows are kept, in Arrow (16 float features are about 100 bytes a row). Everything
computed from them streams: the calibrator takes them in strides (``quantize``), the gate and the
reference statistics score them in batches keeping a few numbers per row (``scoring``), and the
speed is timed on a bounded number of rows (``fidelity``). Nothing grows with rows x activation or
output width; ``benchmarks/calibration_memory.py`` measures it.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from pipelines.core.card import BATCH, DEFAULT_SIGNATURE, Card, OutputSpec, Shape
from pipelines.core.model import ONNX_TO_DTYPE, model_versions, to_feed
from pipelines.core.stats import column_stats
from pipelines.core.validate import validate
from pipelines.errors import InputError, ModelCardError, flat_message
from pipelines.modeling.artifacts import FP32_FILE, INT8_FILE, artifact, save_onnx, write_card
from pipelines.modeling.designation import default_score, label_output, parse_score
from pipelines.modeling.fidelity import DEFAULT_TIMING_REPEATS, THRESHOLDS, judge_int8, task_metrics
from pipelines.modeling.gate import open_session
from pipelines.modeling.graph import (
    check_output_types,
    graph_inputs,
    load_graph,
    opset,
    quantizable,
    unwrap_zipmap,
)
from pipelines.modeling.quantize import QuantSettings, quantize_model
from pipelines.modeling.rows import Source, usable_rows
from pipelines.modeling.scoring import score_rows
from pipelines.settings import DEFAULT_BATCH_ROWS

if TYPE_CHECKING:
    import onnx
    import onnxruntime as ort

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
VERSION_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
MIN_CALIBRATION_ROWS = 100
HOLDOUT_FRACTION = 0.2
MAX_HOLDOUT_ROWS = 10_000


@dataclass(frozen=True)
class ImportRequest:
    """Everything ``models import`` is told.

    Attributes:
        name: Model name (``^[a-z][a-z0-9_]{0,62}$``).
        onnx: The exported graph: a file, or a loaded model (recipes).
        key: Column holding each row's unique key (string, int32 or int64).
        calibration: Valid input rows (Parquet file or table) the int8 ranges are taken from.
        version: Version to write; None: the next integer.
        columns: Input name -> columns stacked into it, in order (``--columns``).
        score: ``OUTPUT``, ``OUTPUT:INDEX`` or ``OUTPUT:max``; None: the default rule.
        label_column: Column of true labels, for the task metric of the gate.
        holdout: Rows for the gate; None: the last usable calibration rows (not calibrated on).
        description: One sentence on what the model predicts.
        input_descriptions: Graph input name -> what it holds (recorded in the card).
        training: Free-form record of how the model was trained.
        reference: Rows the drift reference statistics come from; None: the calibration rows.
        reference_description: Which rows those are.
        timing_repeats: Timed passes per model in the gate (best counts).
        quantization: How the int8 graph is quantized.
    """

    name: str
    onnx: Path | onnx.ModelProto
    key: str
    calibration: Source
    version: str | None = None
    columns: Mapping[str, list[str]] = field(default_factory=dict)
    score: str | None = None
    label_column: str | None = None
    holdout: Source | None = None
    description: str = ""
    input_descriptions: Mapping[str, str] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    reference: pa.Table | None = None
    reference_description: str = "the usable calibration rows"
    timing_repeats: int = DEFAULT_TIMING_REPEATS
    quantization: QuantSettings = field(default_factory=QuantSettings)


def check_name(name: str) -> None:
    if not NAME_PATTERN.match(name):
        raise ModelCardError(
            f"model name '{name}' is not allowed; use a lowercase letter then up to 62 lowercase "
            "letters, digits or underscores"
        )


def next_version(models_dir: Path, name: str) -> str:
    """One more than the largest integer version of ``name`` (``1`` for a new model)."""
    numbers = [int(v) for v in model_versions(models_dir, name) if v.isdigit()]
    return str(max(numbers, default=0) + 1)


def parse_columns(items: list[str] | None) -> dict[str, list[str]]:
    """``["INPUT=C1,C2", ...]`` -> ``{"INPUT": ["C1", "C2"]}``.

    Raises:
        ModelCardError: an item without ``=`` or without columns, or an input named twice.
    """
    out: dict[str, list[str]] = {}
    for item in items or []:
        name, sep, rest = item.partition("=")
        columns = [c.strip() for c in rest.split(",") if c.strip()]
        if not sep or not name or not columns:
            raise ModelCardError(f"--columns '{item}' must read INPUT=COLUMN1,COLUMN2,...")
        if name in out:
            raise ModelCardError(f"--columns names input '{name}' twice; give its columns once")
        out[name] = columns
    return out


def import_model(models_dir: Path, request: ImportRequest) -> tuple[Card, Path]:
    """Write ``models_dir/NAME/VERSION`` atomically; the models folder is unchanged on any error.

    Returns:
        The card and the version folder.

    Raises:
        PredcacheError: a bad name, an existing version, or anything ``write_imported`` refuses.
    """
    check_name(request.name)
    version = request.version or next_version(models_dir, request.name)
    if not VERSION_PATTERN.match(version):
        raise ModelCardError(f"version '{version}' is not allowed; use letters, digits, '.', '_' or '-'")
    final = models_dir / request.name / version
    if final.exists():
        raise ModelCardError(
            f"{request.name}/{version} already exists in {models_dir}; versions are immutable, "
            "import under a new --version (or leave it out for the next number)"
        )
    created = [p for p in (models_dir, models_dir / request.name) if not p.exists()]
    staging = models_dir / request.name / f".importing-{version}-{os.getpid()}"
    try:
        staging.mkdir(parents=True)
        card = write_imported(staging, request, version=version)
        try:
            staging.rename(final)
        except OSError as exc:
            raise ModelCardError(f"{request.name}/{version} appeared while importing; import again") from exc
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        for folder in reversed(created):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise
    return card, final


def _output_specs(session: Any, card: Card, sample: pa.Table) -> list[OutputSpec]:
    """Every graph output with its element type and shape, as observed on sample rows."""
    results = session.run(None, to_feed(card, sample))
    specs = []
    for meta, result in zip(session.get_outputs(), results, strict=True):
        dtype = ONNX_TO_DTYPE.get(meta.type)
        if dtype is None:
            raise ModelCardError(
                f"graph output '{meta.name}' is {meta.type}; predcache stores tensors of float, double, "
                "integer, bool or string elements"
            )
        values = np.asarray(result)
        if values.ndim not in (1, 2) or values.shape[0] != sample.num_rows:
            raise ModelCardError(
                f"graph output '{meta.name}' has shape {list(values.shape)} for {sample.num_rows} rows; "
                "predcache stores [N], [N, 1] and [N, K] outputs"
            )
        shape: Shape = [BATCH] if values.ndim == 1 else [BATCH, int(values.shape[1])]
        specs.append(OutputSpec(name=meta.name, dtype=dtype, shape=shape))  # type: ignore[arg-type]
    return specs


def write_imported(out_dir: Path, request: ImportRequest, *, version: str) -> Card:
    """Write one model version's artifacts and card into ``out_dir`` (see the module docstring).

    Raises:
        PredcacheError: the graph, the columns, the calibration rows or ``--score`` are unusable.
    """
    import onnx
    import onnxruntime as ort

    if isinstance(request.onnx, Path):
        graph = load_graph(request.onnx)
    else:
        graph = onnx.ModelProto()
        graph.CopyFrom(request.onnx)
    unwrapped = unwrap_zipmap(graph)
    check_output_types(graph)
    inputs = [
        spec.model_copy(update={"description": request.input_descriptions.get(spec.name, "")})
        for spec in graph_inputs(graph, dict(request.columns))
    ]
    out_dir.mkdir(parents=True, exist_ok=True)
    fp32_path, int8_path = out_dir / FP32_FILE, out_dir / INT8_FILE
    if isinstance(request.onnx, Path) and not unwrapped:
        shutil.copyfile(request.onnx, fp32_path)  # the graph as given, byte for byte
    else:
        save_onnx(graph, fp32_path)
    draft = Card(
        name=request.name,
        version=version,
        key=request.key,
        inputs=inputs,
        outputs=[],
        signatures={},
        artifacts={},
    )
    usable, truth = usable_rows(
        request.calibration, draft, label_column=request.label_column, what="calibration"
    )
    if usable.num_rows < MIN_CALIBRATION_ROWS:
        raise InputError(
            f"the calibration file has {usable.num_rows} usable rows (valid, unique keys); at least "
            f"{MIN_CALIBRATION_ROWS} are needed"
        )
    if request.holdout is not None:
        calibration = usable
        holdout, holdout_truth = usable_rows(
            request.holdout, draft, label_column=request.label_column, what="holdout"
        )
        holdout_source = "the --holdout rows"
    else:
        held = min(MAX_HOLDOUT_ROWS, int(usable.num_rows * HOLDOUT_FRACTION))
        calibration = usable.slice(0, usable.num_rows - held)
        holdout = usable.slice(usable.num_rows - held)
        holdout_truth = truth[usable.num_rows - held :] if truth is not None else None
        holdout_source = f"the last {held} usable calibration rows (not calibrated on)"
    try:
        fp32 = open_session(fp32_path)
    except Exception as exc:  # onnxruntime raises its own untyped errors
        detail = flat_message(exc, limit=200)
        raise ModelCardError(f"onnxruntime cannot load the graph ({detail}); export it again") from exc
    outputs = _output_specs(fp32, draft, calibration.slice(0, 64))
    score = parse_score(request.score, outputs) if request.score else default_score(outputs)
    card = Card(
        **{**draft.model_dump(exclude={"outputs", "score", "label"}), "outputs": outputs},
        score=score,
        label=label_output(outputs),
    )

    quant_report: dict[str, Any]
    default_file = FP32_FILE
    sessions = {FP32_FILE: fp32}
    gate: dict[str, Any]
    metrics: dict[str, Any] = {}
    if not quantizable(graph):
        reason = "fp32 is the default: no quantizable ops (MatMul/Gemm) in the graph, so no int8 graph"
        quant_report = {"method": "none", "reason": reason}
        gate = {"passed": False, "reason": reason}
    else:
        quant_report = _quantize(fp32_path, int8_path, card, calibration, request.quantization)
        if not int8_path.exists():
            reason = f"fp32 is the default: int8 quantization failed ({quant_report['error']})"
            quant_report["reason"] = reason
            gate = {"passed": False, "reason": reason}
        else:
            sessions[INT8_FILE] = open_session(int8_path)
            result = judge_int8(
                card,
                fp32,
                sessions[INT8_FILE],
                holdout,
                holdout_truth,
                batch_rows=DEFAULT_BATCH_ROWS,
                repeats=request.timing_repeats,
            )
            gate = {
                "passed": result.passed,
                "reason": result.reason,
                **result.figures,
                "thresholds": THRESHOLDS,
            }
            quant_report["timings"] = result.timings
            metrics = result.metrics
            if result.passed:
                default_file = INT8_FILE
    if holdout_truth is not None and not metrics:
        metrics = {
            "fp32": task_metrics(
                score_rows(fp32, card, holdout, batch_rows=DEFAULT_BATCH_ROWS), holdout_truth
            )
        }
    files = [FP32_FILE, *([INT8_FILE] if int8_path.exists() else [])]
    signatures = {DEFAULT_SIGNATURE: default_file, "full": FP32_FILE}
    if int8_path.exists():
        signatures["int8"] = INT8_FILE
    reference = request.reference if request.reference is not None else calibration
    if request.reference is not None:
        reference = validate(reference.select([request.key, *card.columns]), card).good
    card = Card(
        **card.model_dump(
            exclude={
                "description",
                "signatures",
                "artifacts",
                "training",
                "metrics",
                "quantization",
                "reference_stats",
                "opset",
                "onnxruntime_version",
            }
        ),
        description=request.description,
        signatures=signatures,
        artifacts={name: artifact(out_dir / name) for name in files},
        training={
            **request.training,
            "source": str(request.onnx) if isinstance(request.onnx, Path) else "recipe",
            "producer": f"{graph.producer_name} {graph.producer_version}".strip(),
            "zipmap_unwrapped": unwrapped,
            "calibration_rows": calibration.num_rows,
            "reference_stats": {
                "rows": reference.num_rows,
                "description": request.reference_description + f"; score from {default_file}",
            },
        },
        metrics={
            "holdout": {"rows": holdout.num_rows, "description": holdout_source},
            **{kind: {k: round(v, 6) for k, v in values.items()} for kind, values in metrics.items()},
        },
        quantization={**quant_report, "gate": gate},
        reference_stats=_reference_stats(card, sessions[default_file], reference),
        opset=opset(graph),
        onnxruntime_version=ort.__version__,
    )
    write_card(out_dir, card)
    return card


def _quantize(
    fp32_path: Path, int8_path: Path, card: Card, calibration: pa.Table, settings: QuantSettings
) -> dict[str, Any]:
    """Quantize with ``settings``, else per-tensor (onnxruntime's per-channel bias handling fails on
    some Gemm graphs); when both fail, no int8 file and the report's ``error`` says why."""
    from dataclasses import replace

    errors = []
    for attempt in (settings, replace(settings, per_channel=False)):
        try:
            return quantize_model(fp32_path, int8_path, card, calibration, attempt)
        except Exception as exc:  # onnxruntime's quantizer raises arbitrary errors
            int8_path.unlink(missing_ok=True)
            errors.append(f"{attempt.label}: {type(exc).__name__}: {' '.join(str(exc).split())[:160]}")
        if not settings.per_channel:
            break
    return {"method": "none", "error": "; ".join(errors)}


def _reference_stats(card: Card, session: ort.InferenceSession, table: pa.Table) -> dict[str, Any]:
    """Statistics of the scalar input columns (coerced, as the scorer sees them), score and label."""
    scored = score_rows(session, card, table, batch_rows=DEFAULT_BATCH_ROWS)
    outputs = {"score": pa.array(scored.score)}
    if scored.label is not None:
        outputs["label"] = pa.array(scored.label)
    columns = card.scalar_columns
    return {**column_stats(table.select(columns), columns), **column_stats(pa.table(outputs), list(outputs))}
