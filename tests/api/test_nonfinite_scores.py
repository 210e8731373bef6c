"""A key whose model score came out NaN or infinite is a reject, so the API answers 404, never 500."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import onnx
import pyarrow as pa
import pyarrow.parquet as pq
from onnx import TensorProto, helper

from pipelines.api import create_app
from pipelines.core.card import sha256_file
from pipelines.jobs import RunRequest, run_job
from pipelines.settings import Settings


def _divide_model(models: Path) -> Path:
    """score = x / n (NaN for 0/0, infinite for x/0)."""
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["n"], ["nf"], to=TensorProto.FLOAT),
            helper.make_node("Div", ["x", "nf"], ["q"]),
            helper.make_node("Reshape", ["q", "shape"], ["score"]),
        ],
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


def test_nan_and_infinite_scores_are_not_served_and_never_cause_a_500(
    database_url: str, tmp_path: Path, make_api_settings, serve_app
) -> None:  # type: ignore[no-untyped-def]
    models = _divide_model(tmp_path / "models")
    folder = tmp_path / "in"
    folder.mkdir()
    table = pa.table({"id": ["ok", "nan", "inf"], "x": [1.0, 0.0, 1.0], "n": [2, 0, 0]})
    pq.write_table(table, folder / "p.parquet")
    settings = Settings(
        database_url=database_url,
        home=tmp_path / "home",
        models_dir=models,
        workers=1,
        max_reject_fraction=1.0,
    )
    summary = run_job(settings, RunRequest(model="div", input=folder, publish=True))
    assert (summary.rows_out, summary.rows_rejected, summary.published) == (1, 2, True)
    app = create_app(make_api_settings(database_url, tmp_path / "api"))
    with serve_app(app) as base, httpx.Client(base_url=base, timeout=30) as client:
        assert client.get("/v1/models/div/predictions/ok").json()["score"] == 0.5
        assert client.get("/v1/models/div/predictions/nan").status_code == 404
        assert client.get("/v1/models/div/predictions/inf").status_code == 404
        batch = client.post("/v1/models/div/predictions:batchGet", json={"keys": ["ok", "nan", "inf"]})
    assert batch.status_code == 200
    assert [r["status"] for r in batch.json()["results"]] == ["FOUND", "NOT_FOUND", "NOT_FOUND"]
