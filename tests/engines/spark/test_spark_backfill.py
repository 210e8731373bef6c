"""A backfill on Spark starts one session and scores every day with it."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.spark, pytest.mark.slow]
CLI_TIMEOUT = 400
#: The line the engine writes to each run's log (``engines.spark._announce``).
SESSION_LINE = re.compile(r"predcache run (\d+): spark application (\S+), driver JVM pid (\d+)")


def test_a_three_day_backfill_scores_every_day_in_one_spark_application_and_jvm(
    spark_cli_env, database_url, tmp_path, flights_dir
) -> None:
    home = tmp_path / "home"
    days = ["--start", "2013-07-01", "--end", "2013-07-03"]
    args = ["--model", "flights_delay", "--input-template", str(flights_dir / "date={date}"), *days]
    args += ["--engine", "spark", "--spark-master", "local[2]", "--shard-rows", "400", "--json"]
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "backfill", *args],
        env=spark_cli_env(database_url, home),
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    runs = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    sessions = {
        int(run_id): (app, pid)
        for log in (home / "logs").glob("run-*.log")
        for run_id, app, pid in SESSION_LINE.findall(log.read_text(errors="replace"))
    }
    assert [r["status"] for r in runs] == ["verified"] * 3 and all(r["shards_total"] > 1 for r in runs)
    assert sorted(sessions) == sorted(r["run_id"] for r in runs)
    assert len(set(sessions.values())) == 1
