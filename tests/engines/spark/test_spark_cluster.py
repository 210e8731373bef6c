"""A real Spark standalone cluster (master + two workers on loopback) runs `predcache run --engine spark`."""

from __future__ import annotations

import json
import subprocess
import sys

import pyarrow.dataset as ds
import pytest

from pipelines.store.db import connection

pytestmark = [pytest.mark.spark, pytest.mark.slow]
#: Bounds the subprocess (a cluster run takes well under a minute once the JVMs are up).
CLI_TIMEOUT = 400


def _stored_keys(url: str, run_id: int) -> tuple[list[str], list[str]]:
    with connection(url) as conn:
        stored = conn.execute("SELECT key FROM predictions WHERE run_id = %s", (run_id,)).fetchall()
        rejected = conn.execute("SELECT key FROM rejects WHERE run_id = %s", (run_id,)).fetchall()
    return [r[0] for r in stored], [r[0] for r in rejected]


def test_a_run_on_a_standalone_cluster_stores_every_key_once(
    spark_cluster, spark_cli_env, database_url, tmp_path, flights_dir
) -> None:
    day = flights_dir / "date=2013-07-05"
    model = ["--model", "flights_delay", "--engine", "spark", "--spark-master", spark_cluster.master]
    args = [*model, "--input", str(day), "--shard-rows", "250", "--json"]
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "run", *args],
        env=spark_cli_env(database_url, tmp_path / "home"),
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    keys = ds.dataset(day, format="parquet").to_table(columns=["flight_id"])["flight_id"].to_pylist()
    stored, rejected = _stored_keys(database_url, summary["run_id"])
    assert summary["status"] == "verified" and summary["engine"] == "spark" and summary["shards_total"] > 1
    assert summary["rows_in"] == len(keys) == summary["rows_out"] + summary["rows_rejected"]
    assert len(stored) == summary["rows_out"] and sorted(stored + rejected) == sorted(keys)
    assert [app["name"] for app in spark_cluster.master_state()["completedapps"]] == ["predcache"]
    assert list(spark_cluster.executor_tmp.glob("predcache-spark-models/*/flights_delay/1/model.int8.onnx"))
