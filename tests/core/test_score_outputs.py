"""NaN or infinite model outputs are rejected with a reason, never stored."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pyarrow as pa
from onnx import TensorProto, helper

from pipelines.core.card import sha256_file
from pipelines.core.model import load_model
from pipelines.core.score import score_table


def _divide_model(models: Path) -> Path:
    """score = x / n: NaN for 0/0, infinite for x/0."""
    nodes = [
        helper.make_node("Cast", ["n"], ["nf"], to=TensorProto.FLOAT),
        helper.make_node("Div", ["x", "nf"], ["q"]),
        helper.make_node("Reshape", ["q", "shape"], ["score"]),
    ]
    graph = helper.make_graph(
        nodes,
        "div",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1]),
            helper.make_tensor_value_info("n", TensorProto.INT64, [None, 1]),
        ],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, [None])],
        [helper.make_tensor("shape", TensorProto.INT64, [1], [-1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    folder = models / "div" / "1"
    folder.mkdir(parents=True)
    onnx.save(model, folder / "model.onnx")
    card = {
        "name": "div", "version": "1", "key": "id",
        "inputs": [{"name": "x", "dtype": "float32"}, {"name": "n", "dtype": "int64"}],
        "outputs": [{"name": "score", "dtype": "float32"}],
        "signatures": {"default": "model.onnx"},
        "artifacts": {"model.onnx": {"sha256": sha256_file(folder / "model.onnx"), "bytes": 1}},
    }  # fmt: skip
    (folder / "card.json").write_text(json.dumps(card))
    return models


def test_nan_and_infinite_scores_become_rejects_with_a_reason(tmp_path: Path) -> None:
    model = load_model(_divide_model(tmp_path / "m"), "div")
    table = pa.table({"id": ["ok", "nan", "inf", "ninf"], "x": [1.0, 0.0, 1.0, -1.0], "n": [2, 0, 0, 0]})
    result = score_table("00-0", table, model, batch_rows=2)
    assert result.predictions["key"].to_pylist() == ["ok"]
    assert np.isfinite(result.predictions["score"].to_numpy()).all()
    reasons = dict(zip(result.rejects["key"].to_pylist(), result.rejects["reason"].to_pylist(), strict=True))
    assert reasons == {
        "nan": "model output 'score' is NaN",
        "inf": "model output 'score' is infinite",
        "ninf": "model output 'score' is infinite",
    }
    assert result.rows_in == result.rows_out + result.rows_rejected == 4
