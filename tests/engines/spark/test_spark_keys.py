"""Core's key hash is Spark's built-in ``xxhash64`` (README, "Keys and shards"): Spark jobs reproduce it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from pipelines.core.keys import NULL_KEY_HASH, key_hash

pytestmark = [
    pytest.mark.spark,
    pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning"),
]

EDGE_KEYS = [
    "", "a", "é", "日本語のキー", "🛫✈️🛬", "x" * 7, "y" * 8, "z" * 31, "w" * 32, "v" * 33, "u" * 100,
    "UA-1545-2013-01-01-N14228", "tab\tand\nnewline", "nul\x00byte",
]  # fmt: skip


def test_spark_xxhash64_equals_core_key_hash_on_edge_cases(spark) -> None:  # type: ignore[no-untyped-def]
    from pyspark.sql import functions as F

    frame = spark.createDataFrame([(i, k) for i, k in enumerate(EDGE_KEYS)], "i long, k string")
    rows = frame.select("i", F.xxhash64("k").alias("h")).orderBy("i").collect()
    got = np.array([row.h for row in rows], dtype=np.int64)
    np.testing.assert_array_equal(got, key_hash(pa.array(EDGE_KEYS, pa.string())))
    assert key_hash(pa.array([None], pa.string()))[0] == NULL_KEY_HASH


def test_spark_xxhash64_equals_core_key_hash_on_every_real_flight_key(spark, flights_dir: Path) -> None:  # type: ignore[no-untyped-def]
    from pyspark.sql import functions as F

    keys = ds.dataset(flights_dir, format="parquet", partitioning="hive").to_table(columns=["flight_id"])
    frame = spark.read.parquet(str(flights_dir)).select("flight_id", F.xxhash64("flight_id"))
    got = {row[0]: row[1] for row in frame.collect()}
    expected = dict(zip(keys["flight_id"].to_pylist(), key_hash(keys["flight_id"]).tolist(), strict=True))
    assert len(got) == keys.num_rows > 1000
    assert got == expected
