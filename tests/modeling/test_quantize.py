"""Quantization, the gate and version writing, on a tiny sklearn model (seconds, not minutes)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import pyarrow as pa
import pytest
from onnx import numpy_helper

from pipelines.core.card import Card, InputSpec
from pipelines.core.model import load_model
from pipelines.errors import ModelCardError
from pipelines.modeling.artifacts import FP32_FILE, INT8_FILE
from pipelines.modeling.bundle import TrainedModel, write_version
from pipelines.modeling.export import export_binary_classifier, with_score_output
from pipelines.modeling.gate import MAX_AUC_DELTA, judge
from pipelines.modeling.quantize import QuantSettings, quantize_model

INPUTS = [
    InputSpec(name="c", dtype="string"),
    InputSpec(name="n", dtype="int64"),
    InputSpec(name="x", dtype="float32"),
]


def _rows(count: int, seed: int) -> tuple[pa.Table, np.ndarray]:
    rng = np.random.default_rng(seed)
    c = rng.choice(["a", "b", "c"], count)
    n = rng.integers(0, 4, count)
    x = rng.normal(0.0, 1.0, count).astype(np.float32)
    truth = ((x + (c == "a") - 0.3 * n + rng.normal(0, 0.5, count)) > 0).astype(np.int64)
    table = pa.table({"key": [f"k{i}" for i in range(count)], "c": c, "n": n, "x": x})
    return table, truth


def _tiny_trained() -> TrainedModel:
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    train, truth = _rows(2_000, seed=1)
    frame = pd.DataFrame(
        {
            "c": np.asarray(train["c"].to_pylist(), dtype=object),
            "n": train["n"].to_numpy(),
            "x": train["x"].to_numpy(),
        }
    )
    features = ColumnTransformer(
        [("cat", OneHotEncoder(handle_unknown="ignore"), ["c", "n"]), ("num", StandardScaler(), ["x"])]
    )
    pipeline = Pipeline(
        [
            ("features", features),
            ("classifier", MLPClassifier(hidden_layer_sizes=(8,), max_iter=30, random_state=0)),
        ]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        pipeline.fit(frame, truth)
    holdout, holdout_truth = _rows(1_000, seed=2)
    return TrainedModel(
        onnx_model=export_binary_classifier(pipeline, INPUTS),
        inputs=INPUTS,
        key="key",
        description="A tiny test model.",
        training={"rows": 2_000},
        calibration=train.slice(0, 500),
        holdout=holdout,
        holdout_truth=holdout_truth,
        holdout_description="fresh random rows",
        reference=train,
        reference_description="the training rows",
    )


@pytest.fixture(scope="module")
def trained() -> TrainedModel:
    return _tiny_trained()


def _card() -> Card:
    return Card(name="tiny", version="1", key="key", inputs=INPUTS, outputs=[], signatures={}, artifacts={})


def test_export_has_one_input_per_column_and_score_label_outputs(trained: TrainedModel) -> None:
    graph = trained.onnx_model.graph
    assert [i.name for i in graph.input] == ["c", "n", "x"]
    assert [o.name for o in graph.output] == ["score", "label"]


def test_export_rejects_a_graph_without_probabilities() -> None:
    from onnx import TensorProto, helper

    node = helper.make_node("Identity", ["x"], ["label"])
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.INT64, [None])],
        [helper.make_tensor_value_info("label", TensorProto.INT64, [None])],
    )
    with pytest.raises(ModelCardError, match="zipmap=False"):
        with_score_output(helper.make_model(graph))


def test_static_quantization_adds_qdq_only_around_matmul(trained: TrainedModel, tmp_path: Path) -> None:
    fp32 = tmp_path / FP32_FILE
    fp32.write_bytes(trained.onnx_model.SerializeToString())
    report = quantize_model(fp32, tmp_path / INT8_FILE, _card(), trained.calibration, QuantSettings())
    ops = [node.op_type for node in onnx.load(tmp_path / INT8_FILE).graph.node]
    assert "QuantizeLinear" in ops and "OneHotEncoder" in ops
    assert (report["method"], report["calibration"]["rows"]) == ("static QDQ int8", 500)


def test_write_version_writes_a_loadable_card(trained: TrainedModel, tmp_path: Path) -> None:
    card = write_version(
        tmp_path / "tiny" / "1", trained, name="tiny", version="1", quantization=QuantSettings()
    )
    assert card.quantization["batch_invariant"] is True
    assert set(card.reference_stats) == {"c", "n", "x", "score"}
    assert card.signatures["full"] == FP32_FILE
    for signature in card.signatures:
        load_model(tmp_path, "tiny", signature=signature)


def _flip_score(fp32_path: Path, int8_path: Path, *_: object) -> dict[str, object]:
    # A "quantized" model whose score is P(class 0): its AUC is 1 - AUC, far outside the gate.
    model = onnx.load(fp32_path)
    for index, tensor in enumerate(model.graph.initializer):
        if tensor.name == "score_class_index":
            model.graph.initializer[index].CopyFrom(
                numpy_helper.from_array(np.array(0, np.int64), tensor.name)
            )
    onnx.save(model, int8_path)
    return {"method": "broken on purpose"}


def test_a_failed_gate_ships_fp32_as_default(
    trained: TrainedModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("pipelines.modeling.bundle.quantize_model", _flip_score)
    card = write_version(
        tmp_path / "tiny" / "1", trained, name="tiny", version="1", quantization=QuantSettings()
    )
    assert card.quantization["gate"]["passed"] is False
    assert card.signatures["default"] == FP32_FILE
    assert "fp32" in card.quantization["gate"]["reason"] and "fp32" in card.description
    assert load_model(tmp_path, "tiny").file_name == FP32_FILE


def test_gate_passes_within_thresholds() -> None:
    gate = judge(0.72, 0.721, label_agreement=0.99, int8_speedup=1.3, batch_invariant=True)
    assert gate.passed and gate.reason.startswith("passed")


@pytest.mark.parametrize(
    ("auc_int8", "agreement", "speedup", "invariant", "failed_check"),
    [
        (0.72 - 2 * MAX_AUC_DELTA, 0.99, 1.3, True, "AUC delta"),
        (0.72, 0.95, 1.3, True, "label agreement"),
        (0.72, 0.99, 0.8, True, "speedup"),
        (0.72, 0.99, 1.3, False, "NOT bit-identical"),
    ],
)
def test_gate_fails_on_each_check(
    auc_int8: float, agreement: float, speedup: float, invariant: bool, failed_check: str
) -> None:
    gate = judge(0.72, auc_int8, label_agreement=agreement, int8_speedup=speedup, batch_invariant=invariant)
    assert not gate.passed
    assert failed_check in gate.reason and "fp32" in gate.reason
