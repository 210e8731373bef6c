"""The DAG files as Airflow's parser sees them: no import errors, the right shape, light to parse."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

DAGS_FOLDER = Path(__file__).resolve().parents[2] / "dags"
DAG_ID = "batch_predict_flights_delay"
HEAVY_MODULES = ("apache_beam", "pyspark", "onnxruntime")
TASK_ORDER = ["check_input", "plan", "score", "verify", "publish", "observe", "evaluate"]
MAINTENANCE_DAG_ID = "predcache_maintenance"

pytestmark = pytest.mark.airflow

_PARSE_AND_LIST_MODULES = f"""
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder={str(DAGS_FOLDER)!r})
print(json.dumps({{"errors": {{str(k): str(v) for k, v in bag.import_errors.items()}}, "dags": bag.dag_ids,
                  "heavy": sorted(m for m in {HEAVY_MODULES!r} if m in sys.modules)}}))
"""


def _parse_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREDCACHE_", "AIRFLOW"))}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGS_FOLDER=str(DAGS_FOLDER),
    )
    return env


@pytest.fixture(scope="module")
def dagbag(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with pytest.MonkeyPatch.context() as patch:
        for name, value in _parse_env(tmp_path_factory.mktemp("airflow_parse")).items():
            patch.setenv(name, value)
        from airflow.dag_processing.dagbag import DagBag

        yield DagBag(dag_folder=str(DAGS_FOLDER))


def test_dag_files_parse_without_import_errors(dagbag: Any) -> None:
    assert dagbag.import_errors == {}
    assert DAG_ID in dagbag.dag_ids


def test_reference_dag_runs_daily_from_july_2013_without_catchup(dagbag: Any) -> None:
    dag = dagbag.dags[DAG_ID]
    assert dag.start_date == datetime(2013, 7, 1, tzinfo=UTC)
    assert dag.timetable.expression == "0 0 * * *"  # @daily
    assert dag.catchup is False


def test_tasks_chain_check_plan_score_verify_publish_observe_evaluate(dagbag: Any) -> None:
    dag = dagbag.dags[DAG_ID]
    assert sorted(dag.task_ids) == sorted(TASK_ORDER)
    for upstream, downstream in zip(TASK_ORDER, TASK_ORDER[1:], strict=False):
        assert dag.get_task(upstream).downstream_task_ids == {downstream}


def test_a_daily_maintenance_dag_runs_the_alerts_without_scoring(dagbag: Any) -> None:
    dag = dagbag.dags[MAINTENANCE_DAG_ID]
    assert sorted(dag.task_ids) == ["alerts", "gc"]
    assert dag.timetable.expression == "0 0 * * *" and dag.catchup is False


def test_every_task_retries_times_out_and_alerts_on_failure(dagbag: Any) -> None:
    for task in dagbag.dags[DAG_ID].tasks:
        assert task.retries >= 1
        assert task.execution_timeout is not None and task.execution_timeout >= timedelta(minutes=1)
        assert task.on_failure_callback


def test_params_choose_version_engine_input_template_and_inject_faults(dagbag: Any) -> None:
    params = dagbag.dags[DAG_ID].params
    assert params["engine"] == "beam" and params["version"] is None
    assert params["input_template"] == "{data_dir}/date={date}"
    assert params["fail_shards"] == []


def test_parsing_the_dags_imports_no_engine_or_onnxruntime(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _PARSE_AND_LIST_MODULES],
        env=_parse_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    parsed = json.loads(done.stdout.strip().splitlines()[-1])
    assert parsed["errors"] == {} and DAG_ID in parsed["dags"]
    assert parsed["heavy"] == []
