"""`airflow dags test` of the reference DAG against a real cache: a day published, a fault, a rerun."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pyarrow.parquet as pq
import pytest
import yaml

from pipelines.store.lookup import lookup

DAG_ID = "batch_predict_flights_delay"
MODEL = "flights_delay"
SHIPPED_CONFIG = Path(__file__).resolve().parents[2] / "dags" / "predcache_dags.yaml"
#: A day of flights (~1k rows) is far below the default shard_rows, so its plan is the single root shard.
ONLY_SHARD = "00-0"

pytestmark = [pytest.mark.airflow, pytest.mark.slow]


def _day_keys(flights_dir: Path, day: str) -> set[str]:
    return set(pq.read_table(flights_dir / f"date={day}", columns=["flight_id"]).column(0).to_pylist())


def _runs(url: str) -> list[dict[str, Any]]:
    with psycopg.connect(url) as conn:
        cur = conn.execute("SELECT run_id, status, publish_id, input_uri, attempts FROM runs ORDER BY run_id")
        names = [c.name for c in cur.description or []]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def _fail(done: Any) -> str:
    return f"exit {done.returncode}\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"


@pytest.fixture()
def no_retry_config(tmp_path: Path) -> Path:
    """The shipped DAG config with retries off, so an injected fault fails the run at once."""
    config = yaml.safe_load(SHIPPED_CONFIG.read_text())
    for spec in config["dags"]:
        spec["retries"] = 0
    path = tmp_path / "dags.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_dags_test_of_a_day_publishes_its_predictions(
    airflow_home: Callable[[str], Any], new_database: Callable[[], str], flights_dir: Path
) -> None:
    url = new_database()
    done = airflow_home(url).run("dags", "test", DAG_ID, "2013-07-02")
    assert done.returncode == 0, _fail(done)
    with psycopg.connect(url) as conn:
        rejected = {row[0] for row in conn.execute("SELECT key FROM rejects").fetchall()}
        found = [p for p in lookup(conn, MODEL, sorted(_day_keys(flights_dir, "2013-07-02"))) if p.found]
        observed = conn.execute("SELECT drift FROM run_stats").fetchall()
    assert {p.key for p in found} == _day_keys(flights_dir, "2013-07-02") - rejected
    assert {p.version for p in found} == {"1"}
    assert len(observed) == 1 and "score" in observed[0][0]


def test_a_failing_score_fails_the_run_unpublished_and_a_rerun_completes_it(
    airflow_home: Callable[[str], Any],
    new_database: Callable[[], str],
    no_retry_config: Path,
    webhook: tuple[str, list[dict[str, object]]],
    cache_state: Callable[[str], Any],
) -> None:
    url = new_database()
    home = airflow_home(url)
    hook_url, received = webhook
    fault = json.dumps({"fail_shards": [ONLY_SHARD]})
    env = {"PREDCACHE_DAGS_CONFIG": str(no_retry_config), "PREDCACHE_ALERT_WEBHOOK_URL": hook_url}
    failed = home.run("dags", "test", DAG_ID, "2013-07-06", "--conf", fault, **env)
    assert failed.returncode != 0, _fail(failed)
    (run,) = _runs(url)
    assert (run["status"], run["publish_id"]) == ("failed", None)
    assert cache_state(url) == ([], [])
    assert [(a["dag_id"], a["task_id"]) for a in received] == [(DAG_ID, "score")]

    rerun = home.run("dags", "test", DAG_ID, "2013-07-06", **env)
    assert rerun.returncode == 0, _fail(rerun)
    (resumed,) = _runs(url)
    assert (resumed["run_id"], resumed["status"], resumed["attempts"]) == (run["run_id"], "published", 2)
    assert cache_state(url)[1] == [(MODEL, "1")]
