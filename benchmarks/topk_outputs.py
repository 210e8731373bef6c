"""Stored rows/s of a top-k recommender (two [N, 10] outputs) side by side with flights_delay.

Both models score the same number of rows through ``run_job`` on Beam into a fresh database on
the configured server, published; before a figure is reported, a sample of stored outputs is
checked bit for bit against onnxruntime run directly on the default signature file.

    python -m benchmarks.topk_outputs --rows 200000 --url postgresql://postgres@127.0.0.1:5432/postgres

Measured 2026-11-23 with 200k rows on this 2-core machine while it was shared (load average
~14): store path (encode + COPY + index) topk 56k rows/s, flights_delay 124k rows/s (its quiet
figure is ~267k, benchmarks/RESULTS.md); whole `run --publish` topk 14.5k rows/s, flights_delay
10.8k rows/s. Both self-checks passed (200 keys bit for bit).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.common import drop_database, fresh_database
from pipelines.core.card import load_card
from pipelines.core.model import load_model, to_feed
from pipelines.core.outputs import encode_outputs
from pipelines.core.validate import validate
from pipelines.jobs import RunRequest, run_job
from pipelines.settings import DEFAULT_MODELS_DIR, Settings
from pipelines.store.db import connection, migrate

USER_WIDTH = 32
ITEMS = 1_000
TOP_K = 10
CHECK_KEYS = 200


def topk_graph() -> Any:
    """user [N, 32] -> affinity = user @ items [32, 1000] -> TopK 10: scores [N, 10], items [N, 10]."""
    from onnx import TensorProto, helper, numpy_helper

    factors = np.random.default_rng(1).normal(size=(USER_WIDTH, ITEMS)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["user", "item_factors"], ["affinity"]),
            helper.make_node("TopK", ["affinity", "k"], ["scores", "items"], axis=1),
        ],
        "bench_topk",
        [helper.make_tensor_value_info("user", TensorProto.FLOAT, [None, USER_WIDTH])],
        [
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, [None, TOP_K]),
            helper.make_tensor_value_info("items", TensorProto.INT64, [None, TOP_K]),
        ],
        [numpy_helper.from_array(factors, "item_factors"), numpy_helper.from_array(np.array([TOP_K]), "k")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def users(n: int, *, seed: int) -> pa.Table:
    vectors = np.random.default_rng(seed).normal(size=(n, USER_WIDTH)).astype(np.float32)
    return pa.table(
        {
            "user_id": pa.array(np.arange(n, dtype=np.int64)),
            "user": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), USER_WIDTH),
        }
    )


def _check(url: str, model: str, version_dir: Path, table: pa.Table) -> list[str]:
    """Problems (empty when right): stored outputs of a sample vs onnxruntime on the default file."""
    card = load_card(version_dir)
    good = validate(table, card).good.slice(0, CHECK_KEYS)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(version_dir / card.signature_file()), options)
    names = [o.name for o in card.outputs]
    results = dict(zip(names, session.run(names, to_feed(card, good)), strict=True))
    keys = good[card.key].to_pylist()
    with connection(url) as conn:
        stored = dict(
            conn.execute(
                "SELECT key, outputs FROM predictions_current WHERE model = %s AND key = ANY(%s)",
                (model, keys),
            ).fetchall()
        )
    problems = []
    for i, key in enumerate(keys):
        for spec in card.outputs:
            want = np.asarray(results[spec.name])[i].reshape(-1)
            got = np.asarray(stored[key][spec.name], dtype=want.dtype).reshape(-1)
            if want.tobytes() != got.tobytes():
                problems.append(f"{model} {key} {spec.name} differs")
    return problems


def _write_stage(server_url: str, models_dir: Path, model: str, source: Path) -> dict[str, Any]:
    """The store path alone: encoding the outputs (timed over all rows), then our writer's COPY +
    index (``ceilings.write_ceiling``, predictions computed before its clock) into a fresh database."""
    from benchmarks.ceilings import write_ceiling

    loaded = load_model(models_dir, model, threads=1)
    table = pa.concat_tables(pq.read_table(p) for p in sorted(source.rglob("*.parquet")))
    good = validate(table.select([loaded.card.key, *loaded.card.columns]), loaded.card).good
    outputs = loaded.predict(good, batch_rows=8_192)
    started = time.perf_counter()
    encode_outputs(loaded.card, outputs, good.num_rows)
    encode_seconds = time.perf_counter() - started
    url = fresh_database(server_url, f"bench_write_{model}")
    try:
        written = write_ceiling(source, url, models_dir, model, 20_000)
    finally:
        drop_database(server_url, url)
    store_seconds = encode_seconds + written["seconds"]
    return {
        "encode_seconds": round(encode_seconds, 3),
        "copy_index_seconds": round(written["seconds"], 3),
        "store_rows_per_s": round(written["rows_written"] / store_seconds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--url", required=True, help="PostgreSQL server URL")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    from pipelines.data.synth import write_synth
    from pipelines.modeling.importer import ImportRequest, import_model

    work = Path(tempfile.mkdtemp(prefix="predcache-bench-topk-"))
    results = []
    try:
        models = work / "models"
        shutil.copytree(DEFAULT_MODELS_DIR / "flights_delay", models / "flights_delay")
        pq.write_table(users(2_000, seed=0), work / "calibration.parquet")
        onnx_path = work / "topk.onnx"
        onnx_path.write_bytes(topk_graph().SerializeToString())
        card, topk_dir = import_model(
            models,
            ImportRequest(
                name="topk", onnx=onnx_path, key="user_id", calibration=work / "calibration.parquet"
            ),
        )
        topk_input = work / "topk_input"
        topk_input.mkdir()
        topk_table = users(args.rows, seed=7)
        pq.write_table(topk_table, topk_input / "part-0.parquet")
        flights_input = work / "flights_input"
        write_synth(flights_input, rows=args.rows)
        for model, source, version_dir in (
            ("flights_delay", flights_input, models / "flights_delay" / "1"),
            ("topk", topk_input, topk_dir),
        ):
            url = fresh_database(args.url, f"bench_topk_{model}")
            try:
                migrate(url)
                settings = Settings(
                    database_url=url, home=work / "home", models_dir=models, workers=args.workers
                )
                started = time.perf_counter()
                summary = run_job(settings, RunRequest(model=model, input=source, publish=True))
                seconds = time.perf_counter() - started
                sample = topk_table if model == "topk" else pq.read_table(next(source.rglob("*.parquet")))
                problems = _check(url, model, version_dir, sample)
                write = _write_stage(args.url, models, model, source)
                results.append(
                    {
                        "model": model,
                        "rows_in": summary.rows_in,
                        "rows_stored": summary.rows_out,
                        "seconds": round(seconds, 2),
                        "stored_rows_per_s": round(summary.rows_out / seconds),
                        "default_signature": load_card(version_dir).signature_file(),
                        **write,
                        "ok": not problems,
                        "problems": problems[:5],
                    }
                )
            finally:
                drop_database(args.url, url)
        print(
            json.dumps(
                {"topk_gate": card.quantization.get("gate", {}).get("reason"), "results": results}, indent=2
            )
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
