"""The Spark peer, written the way Spark's docs show: ``predict_batch_udf`` scoring, ``DataFrame.write.jdbc``.

    spark.read.parquet(DIR) -> key + inputs -> na.drop() (null or NaN inputs)
    -> predict_batch_udf(make_predict_fn, return_type=struct<score float, label bigint>, batch_size)
    -> (version_id, run_id, key, score, label) -> write.jdbc(mode="append") into a plain table
       (same columns and indexes as ours), JDBC options left at Spark's defaults.

``make_predict_fn`` opens one onnxruntime session per Python worker; its ``predict`` gets one numpy
array per input column (as predict_batch_udf passes scalar columns) and builds the [N, 1] feed: the
thinnest adapter for a model with one input per column. Same master as ours: ``local[*]``.
The PostgreSQL JDBC driver is Debian's ``libpostgresql-jdbc-java`` (/usr/share/java/postgresql.jar).

    python -m benchmarks.peer_spark --input DIR --model-file PATH --database-url URL
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from psycopg.conninfo import conninfo_to_dict

from benchmarks.common import PEER_RUN_ID, PEER_TABLE, PEER_VERSION_ID, print_json, tcp_address

KEY = "flight_id"
JDBC_JAR = Path("/usr/share/java/postgresql.jar")
BATCH_SIZE = 8_192
#: The flights model's inputs, in graph order (the predict function names each one).
INPUTS = (
    "carrier",
    "origin",
    "dest",
    "hour",
    "day_of_week",
    "distance",
    "temp",
    "dewp",
    "humid",
    "wind_speed",
    "precip",
    "visib",
)
_NUMPY = {"tensor(string)": object, "tensor(int64)": np.int64, "tensor(float)": np.float32}


def jdbc_url(url: str) -> tuple[str, dict[str, str]]:
    """The JDBC URL and connection properties of a libpq URL that reaches the server over TCP."""
    address = tcp_address(url)
    if address is None:
        raise SystemExit(f"{url} is a unix-socket URL; JDBC needs TCP (use postgresql://user@host:port/db)")
    info = conninfo_to_dict(url)
    props = {"user": str(info.get("user") or "postgres"), "driver": "org.postgresql.Driver"}
    if info.get("password"):
        props["password"] = str(info["password"])
    return f"jdbc:postgresql://{address[0]}:{address[1]}/{info.get('dbname') or 'postgres'}", props


def make_predict_fn_for(model_file: str) -> Callable[[], Callable[..., dict[str, np.ndarray]]]:
    """``make_predict_fn`` for ``predict_batch_udf``: a session, and a ``predict`` taking each column.

    predict_batch_udf maps input columns to the predict function's parameters by count, so the
    function names each of the flights model's inputs (``INPUTS``, checked against the graph).
    """

    def make_predict_fn() -> Callable[..., dict[str, np.ndarray]]:
        session = ort.InferenceSession(model_file, providers=["CPUExecutionProvider"])
        types = {spec.name: _NUMPY[spec.type] for spec in session.get_inputs()}

        def predict(
            carrier: np.ndarray,
            origin: np.ndarray,
            dest: np.ndarray,
            hour: np.ndarray,
            day_of_week: np.ndarray,
            distance: np.ndarray,
            temp: np.ndarray,
            dewp: np.ndarray,
            humid: np.ndarray,
            wind_speed: np.ndarray,
            precip: np.ndarray,
            visib: np.ndarray,
        ) -> dict[str, np.ndarray]:
            columns = (carrier, origin, dest, hour, day_of_week, distance, temp, dewp, humid)
            columns += (wind_speed, precip, visib)
            feed = {
                name: column.astype(types[name]).reshape(-1, 1)
                for name, column in zip(INPUTS, columns, strict=True)
            }
            score, label = session.run(["score", "label"], feed)
            return {"score": np.asarray(score, np.float32), "label": np.asarray(label, np.int64)}

        return predict

    return make_predict_fn


def run(source: Path, model_file: Path, url: str) -> None:
    from pyspark.ml.functions import predict_batch_udf
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F
    from pyspark.sql.types import FloatType, LongType, StructField, StructType

    target, properties = jdbc_url(url)
    inputs = [spec.name for spec in ort.InferenceSession(str(model_file)).get_inputs()]
    if tuple(inputs) != INPUTS:
        raise SystemExit(f"{model_file} takes inputs {inputs}; the Spark peer is written for {list(INPUTS)}")
    spark = (
        SparkSession.builder.master("local[*]")
        .appName("peer-spark")
        .config("spark.jars", str(JDBC_JAR))
        .config("spark.ui.enabled", "false")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    try:
        scores = predict_batch_udf(
            make_predict_fn_for(str(model_file)),
            return_type=StructType([StructField("score", FloatType()), StructField("label", LongType())]),
            batch_size=BATCH_SIZE,
        )
        frame = spark.read.parquet(str(source)).select(KEY, *inputs).na.drop()
        out = frame.select(
            F.lit(PEER_VERSION_ID).alias("version_id"),
            F.lit(PEER_RUN_ID).cast("long").alias("run_id"),
            F.col(KEY).alias("key"),
            scores(*[F.col(c) for c in inputs]).alias("p"),
        ).select("version_id", "run_id", "key", "p.score", "p.label")
        out.write.jdbc(url=target, table=PEER_TABLE, mode="append", properties=properties)
    finally:
        spark.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, required=True)
    parser.add_argument("--model-file", type=Path, required=True)
    parser.add_argument("--database-url", required=True)
    args = parser.parse_args()
    # Executors must run this interpreter (it has onnxruntime); set at the edge, before Spark starts.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    started = time.perf_counter()
    run(args.input, args.model_file, args.database_url)
    result: dict[str, Any] = {"scenario": "peer_spark", "seconds_inside": time.perf_counter() - started}
    print_json(result)


if __name__ == "__main__":
    main()
