"""The Spark engine on the real reference model and real July flights: Beam's cache, exactly once."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from pipelines.errors import EngineError
from pipelines.jobs import RunRequest, plan_run, run_job, score_run, verify_run
from pipelines.store import ledger
from pipelines.store.db import connection

pytestmark = [
    pytest.mark.spark,
    pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning"),
]
MODEL = "flights_delay"
SHARD_ROWS = 700


SHARDS_SQL = "SELECT shard_id, rows_in, rows_out, rows_rejected FROM run_shards WHERE run_id = %s ORDER BY 1"
Cache = tuple[dict[str, float], Counter[tuple[str, str]], list[tuple[object, ...]]]


def _keys(folder: Path) -> list[str]:
    table = ds.dataset(folder, format="parquet", partitioning="hive").to_table(columns=["flight_id"])
    return table["flight_id"].to_pylist()


def _cache(url: str, run_id: int) -> Cache:
    """(key -> score as stored float4, (key, reason) of rejects, shard ledger rows) of one run."""
    with connection(url) as conn:
        scores = conn.execute("SELECT key, score FROM predictions WHERE run_id = %s", (run_id,)).fetchall()
        rejects = conn.execute("SELECT key, reason FROM rejects WHERE run_id = %s", (run_id,)).fetchall()
        shards = conn.execute(SHARDS_SQL, (run_id,)).fetchall()
    return dict(scores), Counter(rejects), shards


def _failed_tasks(spark, group: str) -> int:
    tracker = spark.sparkContext.statusTracker()
    stages = [s for j in tracker.getJobIdsForGroup(group) for s in tracker.getJobInfo(j).stageIds]
    return sum(tracker.getStageInfo(s).numFailedTasks for s in stages if tracker.getStageInfo(s) is not None)


def test_spark_and_beam_write_identical_predictions_rejects_and_shards(
    spark, local_master, database_url, other_database_url, settings_for, flights_dir
) -> None:
    request = RunRequest(model=MODEL, input=flights_dir, shard_rows=SHARD_ROWS)
    spark_settings = settings_for(database_url, spark_master=local_master)
    on_spark = run_job(spark_settings, replace(request, engine="spark"))
    on_beam = run_job(settings_for(other_database_url), replace(request, engine="beam"))
    spark_cache = _cache(database_url, on_spark.run_id)
    beam_cache = _cache(other_database_url, on_beam.run_id)
    assert on_spark.engine == "spark" and on_spark.status == on_beam.status == "verified"
    assert spark_cache[0] == beam_cache[0] and len(spark_cache[0]) == on_spark.rows_out > 0
    assert spark_cache[1] == beam_cache[1] and sum(spark_cache[1].values()) == on_spark.rows_rejected > 0
    assert spark_cache[2] == beam_cache[2] and len(spark_cache[2]) == on_spark.shards_total > 5


def test_a_task_failing_on_its_first_attempt_is_retried_without_duplicates_or_gaps(
    spark, local_master, database_url, settings_for, flights_dir
) -> None:
    settings = settings_for(database_url, spark_master=local_master)
    day = flights_dir / "date=2013-07-03"
    run_id = plan_run(settings, RunRequest(model=MODEL, input=day, engine="spark", shard_rows=200)).run_id
    with connection(database_url) as conn:
        shard_ids = [s.shard_id for s in ledger.planned_shards(conn, run_id, pending_only=True)]
    score_run(settings, run_id, engine="spark", engine_options={"fail_first_attempt_shards": shard_ids[:2]})
    run = verify_run(settings, run_id)
    with connection(database_url) as conn:
        [(stored, distinct)] = conn.execute(
            "SELECT count(*), count(DISTINCT key) FROM predictions WHERE run_id = %s", (run_id,)
        ).fetchall()
        attempt = ledger.get_run(conn, run_id).attempts
    scores, rejects, _ = _cache(database_url, run_id)
    assert _failed_tasks(spark, f"predcache-run-{run_id}-attempt-{attempt}") >= 2
    assert stored == distinct == run.rows_out
    assert sorted([*scores, *(k for k, _ in rejects.elements())]) == sorted(_keys(day))


def test_a_shard_that_always_fails_fails_the_run_in_one_line_and_a_rerun_resumes_it(
    spark, local_master, database_url, settings_for, flights_dir
) -> None:
    settings = settings_for(database_url, spark_master=local_master)
    day = flights_dir / "date=2013-07-04"
    request = RunRequest(model=MODEL, input=day, engine="spark", shard_rows=300)
    run_id = plan_run(settings, request).run_id
    with connection(database_url) as conn:
        bad = ledger.planned_shards(conn, run_id, pending_only=True)[0].shard_id
    with pytest.raises(EngineError) as failed:
        run_job(settings, replace(request, fail_shards=frozenset({bad})))
    resumed = run_job(settings, request)
    assert "\n" not in str(failed.value) and f"injected fault in shard {bad}" in str(failed.value)
    assert resumed.run_id == run_id and resumed.resumed and resumed.status == "verified"
    assert resumed.shards_scored >= 1 and resumed.rows_in == len(_keys(day))
