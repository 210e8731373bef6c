"""Write one model version of a binary classifier: fp32 and int8 ONNX, the gate, and the card.

A recipe trains and exports its model, then hands a ``TrainedModel`` to ``write_version``, which
does what every model needs: save ``model.onnx``, quantize it to ``model.int8.onnx``, run the
quantization gate on the holdout (int8 becomes the ``default`` signature only if it passes),
compute metrics and reference statistics, and write ``card.json`` with every artifact's sha256.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from pipelines.core.card import DEFAULT_SIGNATURE, Card, InputSpec, OutputSpec
from pipelines.core.model import arrow_type
from pipelines.core.stats import column_stats
from pipelines.modeling.artifacts import FP32_FILE, INT8_FILE, artifact, save_onnx, write_card
from pipelines.modeling.export import default_opset
from pipelines.modeling.gate import batch_feeds, compare, open_session, run
from pipelines.modeling.quantize import QuantSettings, quantize_model
from pipelines.modeling.sweep import sweep_quantization

if TYPE_CHECKING:
    import onnx

OUTPUTS = [
    OutputSpec(name="score", dtype="float32", description="Probability of the positive class."),
    OutputSpec(name="label", dtype="int64", description="Predicted class: 1 when score > 0.5, else 0."),
]


@dataclass(frozen=True)
class TrainedModel:
    """A trained, exported binary classifier and the data its card is computed from.

    Attributes:
        onnx_model: The fp32 graph with outputs ``score`` and ``label`` (see ``export``).
        inputs: The graph inputs, in card order.
        key: Column holding each row's unique key (not a model input).
        description: One sentence on what the model predicts.
        training: Training window, row counts, hyper-parameters (recorded as given).
        calibration: Fixed valid input rows to calibrate int8 activation ranges on.
        holdout: Valid input rows the model did not train on, for metrics and the gate.
        holdout_truth: The holdout's 0/1 labels.
        holdout_description: How the holdout was chosen.
        reference: Valid input rows that drift is later measured against.
        reference_description: Which rows those are.
    """

    onnx_model: onnx.ModelProto
    inputs: list[InputSpec]
    key: str
    description: str
    training: dict[str, Any]
    calibration: pa.Table
    holdout: pa.Table
    holdout_truth: np.ndarray
    holdout_description: str
    reference: pa.Table
    reference_description: str


def write_version(
    out_dir: Path,
    trained: TrainedModel,
    *,
    name: str,
    version: str,
    quantization: QuantSettings,
    sweep: Sequence[QuantSettings] = (),
) -> Card:
    """Write ``model.onnx``, ``model.int8.onnx`` and ``card.json`` into ``out_dir``.

    Args:
        out_dir: The version folder (created if missing).
        trained: The model and its data.
        name: Model name recorded in the card.
        version: Version recorded in the card.
        quantization: The settings the shipped int8 model is quantized with.
        sweep: Other settings to measure and record next to it (none: no sweep).

    Returns:
        The card as written.
    """
    import onnxruntime as ort

    out_dir.mkdir(parents=True, exist_ok=True)
    draft = Card(
        name=name,
        version=version,
        description=trained.description,
        key=trained.key,
        inputs=trained.inputs,
        outputs=OUTPUTS,
        signatures={},
        artifacts={},
    )
    fp32_path, int8_path = out_dir / FP32_FILE, out_dir / INT8_FILE
    save_onnx(trained.onnx_model, fp32_path)
    report = quantize_model(fp32_path, int8_path, draft, trained.calibration, quantization)
    feeds = batch_feeds(draft, trained.holdout)
    comparison = compare(fp32_path, int8_path, feeds, trained.holdout_truth)
    report.update(
        gate=comparison.gate.model_dump(),
        timings=comparison.timings,
        score_abs_diff=comparison.score_abs_diff,
        batch_invariant=comparison.batch_invariant,
    )
    if sweep:
        report["sweep"] = sweep_quantization(
            fp32_path, draft, trained.calibration, feeds, trained.holdout_truth, candidates=sweep
        )
    default_file = INT8_FILE if comparison.gate.passed else FP32_FILE
    description = trained.description
    if not comparison.gate.passed:
        description += " The int8 model failed the quantization gate, so fp32 is the default signature."
    card = Card(
        **draft.model_dump(include={"name", "version", "key", "inputs", "outputs"}),
        description=description,
        signatures={DEFAULT_SIGNATURE: default_file, "full": FP32_FILE, "int8": INT8_FILE},
        artifacts={FP32_FILE: artifact(fp32_path), INT8_FILE: artifact(int8_path)},
        training={
            **trained.training,
            "reference_stats": {
                "rows": trained.reference.num_rows,
                "description": trained.reference_description + f"; score from {default_file}",
            },
        },
        metrics={
            "holdout": {
                "description": trained.holdout_description,
                "rows": trained.holdout.num_rows,
                "positive_rate": round(float(np.mean(trained.holdout_truth)), 6),
            },
            **{
                kind: {k: round(v, 6) for k, v in values.items()}
                for kind, values in comparison.metrics.items()
            },
        },
        quantization=report,
        reference_stats=reference_stats(draft, out_dir / default_file, trained.reference),
        opset=default_opset(trained.onnx_model),
        onnxruntime_version=ort.__version__,
    )
    write_card(out_dir, card)
    return card


def reference_stats(card: Card, model_path: Path, table: pa.Table) -> dict[str, Any]:
    """Statistics of the inputs (coerced to the card's dtypes, as the scorer sees them) and the score.

    Compute the statistics of scored data the same way (coerced inputs) so drift compares like with like.
    """
    coerced = pa.table(
        {spec.name: table.column(spec.name).cast(arrow_type(spec.dtype)) for spec in card.inputs}
    )
    scores = run(open_session(model_path), batch_feeds(card, coerced)).score
    return {
        **column_stats(coerced, card.input_names),
        **column_stats(pa.table({"score": scores}), ["score"]),
    }
