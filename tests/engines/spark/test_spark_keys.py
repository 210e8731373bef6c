"""Spark computes the same key hash and the same shard as core, natively (no Python per row)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from pipelines.core.keys import key_hash
from pipelines.core.shards import HASH_MIN, Shard, assign_shards, plan_shards

pytestmark = [
    pytest.mark.spark,
    pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning"),
]

EDGE_KEYS = [
    "", "a", "é", "日本語のキー", "🛫✈️🛬", "x" * 7, "y" * 8, "z" * 31, "w" * 32, "v" * 33, "u" * 100,
    "UA-1545-2013-01-01-N14228", "tab\tand\nnewline", "nul\x00byte", None,
]  # fmt: skip


def _spark_hashes(spark, keys: list[str | None]) -> np.ndarray:
    from pyspark.sql import functions as F

    from pipelines.engines.spark import key_hash_column

    frame = spark.createDataFrame([(i, k) for i, k in enumerate(keys)], "i long, k string")
    rows = frame.select("i", key_hash_column(F.col("k")).alias("h")).orderBy("i").collect()
    return np.array([row.h for row in rows], dtype=np.int64)


def test_spark_xxhash64_equals_core_key_hash_on_edge_cases_and_null_is_zero(spark) -> None:
    expected = key_hash(pa.array(EDGE_KEYS, pa.string()))
    assert expected[-1] == 0
    np.testing.assert_array_equal(_spark_hashes(spark, EDGE_KEYS), expected)


def test_spark_xxhash64_equals_core_key_hash_on_every_real_flight_key(spark, flights_dir: Path) -> None:
    from pyspark.sql import functions as F

    from pipelines.engines.spark import key_hash_column

    keys = ds.dataset(flights_dir, format="parquet", partitioning="hive").to_table(columns=["flight_id"])
    frame = spark.read.parquet(str(flights_dir)).select("flight_id", key_hash_column(F.col("flight_id")))
    got = {row[0]: row[1] for row in frame.collect()}
    expected = dict(zip(keys["flight_id"].to_pylist(), key_hash(keys["flight_id"]).tolist(), strict=True))
    assert len(got) == keys.num_rows > 1000
    assert got == expected


def test_spark_shard_position_equals_core_assign_shards_at_range_edges(spark) -> None:
    from pyspark.sql import functions as F

    from pipelines.engines.spark import shard_position_column

    rng = np.random.default_rng(7)
    planned = plan_shards(rng.integers(HASH_MIN, 2**63 - 1, 5000, dtype=np.int64, endpoint=True), 300)
    shards: list[Shard] = planned[::3]  # pending shards only: gaps must map to "no shard"
    edges = [v for s in planned for v in (s.lo, s.hi - 1, min(s.hi, 2**63 - 1))]
    spread = rng.integers(HASH_MIN, 2**63 - 1, 3000, dtype=np.int64)
    hashes = np.concatenate([spread, np.array(edges, np.int64)])
    frame = spark.createDataFrame([(i, int(h)) for i, h in enumerate(hashes)], "i long, h long")
    rows = frame.select("i", shard_position_column(F.col("h"), shards).alias("p")).orderBy("i").collect()
    got = np.array([-1 if row.p is None else row.p for row in rows])
    assert len({s.depth for s in shards}) > 1
    np.testing.assert_array_equal(got, assign_shards(hashes, shards))


def test_shard_position_covers_the_whole_space_with_a_single_depth_zero_shard(spark) -> None:
    from pyspark.sql import functions as F

    from pipelines.engines.spark import shard_position_column

    whole = [Shard(lo=HASH_MIN, hi=2**63, depth=0, index=0, rows=3)]
    frame = spark.createDataFrame([(HASH_MIN,), (0,), (2**63 - 1,)], "h long")
    rows = frame.select(shard_position_column(F.col("h"), whole).alias("p")).collect()
    assert [row.p for row in rows] == [0, 0, 0]


def test_partition_labels_put_each_shard_in_a_partition_of_its_own(spark) -> None:
    from pyspark.sql import functions as F

    from pipelines.engines.spark import partition_labels

    labels = partition_labels(spark, 37)
    frame = spark.createDataFrame([(i, label) for i, label in enumerate(labels)], "i long, label int")
    placed = frame.repartition(37, "label").select("i", F.spark_partition_id().alias("p")).collect()
    assert sorted((row.i, row.p) for row in placed) == [(i, i) for i in range(37)]
