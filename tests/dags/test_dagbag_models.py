"""Several models in one DAG config: one DAG per entry, each scoring its own model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

DAGS_FOLDER = Path(__file__).resolve().parents[2] / "dags"

pytestmark = pytest.mark.airflow

_LIST_DAGS = f"""
import json
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder={str(DAGS_FOLDER)!r})
print(json.dumps({{"errors": {{str(k): str(v) for k, v in bag.import_errors.items()}},
                  "engines": {{d: bag.dags[d].params["engine"] for d in bag.dag_ids
                              if "engine" in bag.dags[d].params}}}}))
"""


def test_config_with_two_models_gives_one_dag_each(tmp_path: Path) -> None:
    entries = [
        {"dag_id": "batch_predict_flights_delay", "model": "flights_delay", "start_date": "2013-07-01"},
        {"dag_id": "batch_predict_churn", "model": "churn", "start_date": "2024-01-01", "engine": "spark"},
    ]
    config = tmp_path / "dags.yaml"
    config.write_text(json.dumps({"data_dir": str(tmp_path), "dags": entries}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREDCACHE_", "AIRFLOW"))}
    env.update(
        AIRFLOW_HOME=str(tmp_path / "airflow"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGS_FOLDER=str(DAGS_FOLDER),
        PREDCACHE_DAGS_CONFIG=str(config),
    )
    done = subprocess.run(
        [sys.executable, "-c", _LIST_DAGS], env=env, capture_output=True, text=True, check=True, timeout=300
    )
    parsed = json.loads(done.stdout.strip().splitlines()[-1])
    assert parsed["errors"] == {}
    assert parsed["engines"] == {"batch_predict_flights_delay": "beam", "batch_predict_churn": "spark"}
