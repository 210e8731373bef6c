"""The job ships predcache to a cluster whose workers have its runtime dependencies but not predcache.

The cluster's processes get no PYTHONPATH and run from their own folders; their Python is a second
virtual environment with the runtime dependencies (pinned to this one's versions) and no predcache.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from importlib.metadata import version
from pathlib import Path

import pytest

from pipelines.jobs import RunRequest, run_job
from pipelines.store.db import connection

pytestmark = [pytest.mark.spark, pytest.mark.slow]

#: What a Spark executor imports (pyspark and py4j come from SPARK_HOME; predcache from the job).
WORKER_DISTRIBUTIONS = [
    "numpy",
    "pyarrow",
    "onnxruntime",
    "psycopg",
    "psycopg-binary",
    "pydantic",
    "xxhash",
    "pandas",
]
MODEL = "flights_delay"
DAY = "date=2013-07-05"
SHARD_ROWS = 250
CLI_TIMEOUT = 400
#: A driver that names the executors' Python through Spark's own setting.
DRIVER = """
import json, sys
from pathlib import Path
from pipelines.jobs import RunRequest, run_job
from pipelines.settings import Settings
master, python, day, shard_rows = sys.argv[1:]
options = {"spark_master": master, "spark_conf": {"spark.pyspark.python": python}}
request = RunRequest(model="flights_delay", input=Path(day), engine="spark", shard_rows=int(shard_rows),
                     engine_options=options)
print(json.dumps(run_job(Settings(), request).to_json()))
"""


@pytest.fixture(scope="module")
def worker_python(make_venv, tmp_path_factory: pytest.TempPathFactory) -> Path:  # type: ignore[no-untyped-def]
    pins = [f"{name}=={version(name)}" for name in WORKER_DISTRIBUTIONS]
    return Path(make_venv(tmp_path_factory.mktemp("worker") / "venv", pins))


@pytest.fixture(scope="module")
def worker_python_without_onnxruntime(worker_python: Path, tmp_path_factory, clean_env) -> Path:  # type: ignore[no-untyped-def]
    """The same environment minus onnxruntime (a hard-linked copy: the original keeps its files)."""
    copy = tmp_path_factory.mktemp("worker-lacking") / "venv"
    subprocess.run(["cp", "-al", str(worker_python.parent.parent), str(copy)], check=True)
    python = copy / "bin" / "python"
    uninstall = [str(python), "-m", "pip", "uninstall", "--yes", "--quiet", "onnxruntime"]
    subprocess.run(uninstall, check=True, env=clean_env(), cwd=copy, timeout=120)
    return python


def _predictions(
    url: str, run_id: int
) -> tuple[dict[str, tuple[float, int | None]], Counter[tuple[str, str]]]:
    with connection(url) as conn:
        rows = conn.execute(
            "SELECT key, score, label FROM predictions WHERE run_id = %s", (run_id,)
        ).fetchall()
        rejects = conn.execute("SELECT key, reason FROM rejects WHERE run_id = %s", (run_id,)).fetchall()
    return {key: (score, label) for key, score, label in rows}, Counter(rejects)


def test_the_worker_environment_has_the_dependencies_but_not_predcache(
    worker_python: Path, clean_env
) -> None:  # type: ignore[no-untyped-def]
    probe = "import onnxruntime, pyarrow, psycopg, pydantic, xxhash\nimport pipelines"
    result = subprocess.run(
        [str(worker_python), "-c", probe],
        env=clean_env(),
        cwd=worker_python.parent,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1 and "No module named 'pipelines'" in result.stderr


def test_a_cluster_run_on_predcache_free_workers_equals_the_local_run_bit_for_bit(
    bare_spark_cluster,
    worker_python,
    spark,
    local_master,
    spark_cli_env,
    database_url,
    other_database_url,
    settings_for,
    flights_dir,
    tmp_path,
) -> None:  # type: ignore[no-untyped-def]
    day = flights_dir / DAY
    home = tmp_path / "home"
    args = [bare_spark_cluster.master, str(worker_python), str(day), str(SHARD_ROWS)]
    result = subprocess.run(
        [sys.executable, "-c", DRIVER, *args],
        env=spark_cli_env(database_url, home),
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    on_cluster = json.loads(result.stdout.strip().splitlines()[-1])
    local = run_job(
        settings_for(other_database_url, spark_master=local_master),
        RunRequest(model=MODEL, input=day, engine="spark", shard_rows=SHARD_ROWS),
    )
    cluster_cache = _predictions(database_url, on_cluster["run_id"])
    local_cache = _predictions(other_database_url, local.run_id)
    assert on_cluster["status"] == local.status == "verified" and on_cluster["shards_total"] > 1
    assert cluster_cache == local_cache and len(cluster_cache[0]) == local.rows_out > 0
    shipped = list((home / "shipping").glob("predcache-*.zip"))
    assert len(shipped) == 1
    assert list(bare_spark_cluster.executor_tmp.parent.glob(f"work/app-*/*/{shipped[0].name}"))


def test_a_worker_lacking_a_runtime_dependency_fails_the_run_with_one_line_naming_it(
    bare_spark_cluster, worker_python_without_onnxruntime, spark_cli_env, database_url, flights_dir, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    day = flights_dir / DAY
    env = spark_cli_env(database_url, tmp_path / "home")
    env["PYSPARK_PYTHON"] = str(worker_python_without_onnxruntime)
    env["PYSPARK_SUBMIT_ARGS"] = "--conf spark.task.maxFailures=1 pyspark-shell"  # fail on the first attempt
    cli = [sys.executable, "-m", "pipelines.cli", "run", "--model", MODEL, "--engine", "spark", "--rerun"]
    options = [
        "--spark-master",
        bare_spark_cluster.master,
        "--input",
        str(day),
        "--shard-rows",
        str(SHARD_ROWS),
    ]
    result = subprocess.run([*cli, *options], env=env, capture_output=True, text=True, timeout=CLI_TIMEOUT)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-3000:]
    assert "cannot import 'onnxruntime', a runtime dependency of predcache" in lines[0]
    assert "pip install 'onnxruntime'" in lines[0]
