"""The input fingerprint is reproducible natively in Spark: ``xxhash64(c1, ..., cN)``."""

from __future__ import annotations

import pyarrow as pa
import pytest

from pipelines.core.fingerprint import input_fingerprint

pytestmark = pytest.mark.spark


def test_spark_xxhash64_of_the_inputs_is_the_fingerprint(spark) -> None:  # type: ignore[no-untyped-def]
    table = pa.table(
        {
            "carrier": ["UA", "", "a long carrier name over thirty-two bytes", "é", "B6"],
            "distance": pa.array([1400, 0, -5, 2**40, 7], pa.int64()),
            "temp": pa.array([71.5, -0.0, 1e-30, 3.25, -12.0], pa.float32()),
            "hour": pa.array([5, 6, 7, 8, 23], pa.int32()),
        }
    )
    frame = spark.createDataFrame(
        [tuple(row.values()) for row in table.to_pylist()],
        schema="carrier string, distance long, temp float, hour int",
    )
    from pyspark.sql import functions as F

    rows = frame.select(F.xxhash64("carrier", "distance", "temp", "hour").alias("h")).collect()
    assert [r["h"] for r in rows] == input_fingerprint(table, table.column_names).tolist()
