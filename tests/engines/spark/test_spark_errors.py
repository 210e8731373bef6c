"""Spark's environment problems become one clear line, fast: no Java, a dead master."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.engines.spark import task_error
from pipelines.engines.spark_session import java_executable, master_addresses
from pipelines.errors import EngineError
from pipelines.jobs import RunRequest, run_job

pytestmark = pytest.mark.spark
DEAD_MASTER = "spark://127.0.0.1:1"
#: Bounds the subprocess: the checks answer in seconds, a hanging Spark would not.
CLI_TIMEOUT = 120


def _cli_env(url: str, home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREDCACHE_", "JAVA_HOME"))}
    env.update({"PREDCACHE_DATABASE_URL": url, "PREDCACHE_HOME": str(home), **extra})
    return env


def _run_cli(env: dict[str, str], day: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    args = ["run", "--model", "flights_delay", "--input", str(day), "--engine", "spark", *extra]
    command = [sys.executable, "-m", "pipelines.cli", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=CLI_TIMEOUT)


def _assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0
    assert len(lines) == 1 and lines[0].startswith("predcache: error:"), result.stderr[-3000:]
    assert all(fragment in lines[0] for fragment in fragments), lines[0]


def test_an_unreachable_master_is_one_engine_error_naming_it(database_url, settings_for, flights_dir) -> None:
    settings = settings_for(database_url, spark_master=DEAD_MASTER)
    request = RunRequest(model="flights_delay", input=flights_dir / "date=2013-07-01", engine="spark")
    with pytest.raises(EngineError, match="unreachable") as failed:
        run_job(settings, request)
    assert DEAD_MASTER in str(failed.value) and "\n" not in str(failed.value)


def test_cli_with_an_unreachable_master_exits_nonzero_with_one_error_line(
    database_url, tmp_path, flights_dir
) -> None:
    env = _cli_env(database_url, tmp_path / "home")
    result = _run_cli(env, flights_dir / "date=2013-07-02", "--spark-master", DEAD_MASTER)
    _assert_one_line_error(result, "Spark master spark://127.0.0.1:1 is unreachable", "local[*]")


def test_cli_without_java_exits_nonzero_with_one_error_line(database_url, tmp_path, flights_dir) -> None:
    env = _cli_env(database_url, tmp_path / "home", PATH=str(Path(sys.executable).parent))
    result = _run_cli(env, flights_dir / "date=2013-07-02")
    _assert_one_line_error(result, "Java was not found", "JAVA_HOME", "--engine beam")


def test_a_java_home_without_java_names_the_missing_executable(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match=f"{tmp_path}/bin/java is not an executable"):
        java_executable(str(tmp_path), "/usr/bin:/bin")


def test_java_on_path_is_found_when_java_home_is_unset() -> None:
    assert Path(java_executable(None, os.environ.get("PATH"))).name == "java"


@pytest.mark.parametrize(
    ("master", "addresses"),
    [
        ("spark://10.0.0.5:7077", [("10.0.0.5", 7077)]),
        ("spark://a:7077,b:7078", [("a", 7077), ("b", 7078)]),
        ("spark://host", [("host", 7077)]),
        ("local[*]", []),
        ("local[2,4]", []),
    ],
)
def test_master_addresses_of_standalone_urls_only(master: str, addresses: list[tuple[str, int]]) -> None:
    assert master_addresses(master) == addresses


def test_a_failed_task_is_reported_by_the_predcache_error_it_died_of() -> None:
    text = (
        "An error occurred while calling o123.collectToPython.\n"
        ": org.apache.spark.SparkException: Job aborted due to stage failure: Task 3 failed 4 times\n"
        'Traceback (most recent call last):\n  File "spec.py", line 99, in process\n'
        "pipelines.errors.StoreError: writing shard 02-1 of run 7 failed (disk full); rerun to resume\n"
        "\tat org.apache.spark.api.python.BasePythonRunner$ReaderIterator.handlePythonException(x.scala:1)\n"
    )
    assert task_error(text) == "writing shard 02-1 of run 7 failed (disk full); rerun to resume"


def test_a_failed_task_without_a_predcache_error_is_reported_by_its_python_exception() -> None:
    text = (
        ": org.apache.spark.SparkException: Job aborted due to stage failure\n"
        "Traceback (most recent call last):\nKeyError: 'carrier'\n"
        "\tat org.apache.spark.api.python.BasePythonRunner$ReaderIterator.handlePythonException(x.scala:1)\n"
        "Caused by: java.io.EOFException: end of stream\n"
    )
    assert task_error(text) == "KeyError: 'carrier'"
