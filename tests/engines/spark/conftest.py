"""Spark fixtures: one local SparkSession for the whole test session, a second database, a real cluster.

Every local test runs on ``local[2,4]`` (2 task slots, a failed task is tried up to 4 times),
so the engine and the tests share one JVM.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyspark
import pytest

from pipelines.store.scratch import scratch_database

LOCAL_MASTER = "local[2,4]"
SPARK_HOME = Path(pyspark.__file__).resolve().parent
CLUSTER_START_SECONDS = 180.0
MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"


@pytest.fixture(scope="session")
def local_master() -> str:
    return LOCAL_MASTER


@pytest.fixture(scope="session")
def spark(local_master: str) -> Iterator[object]:
    """The session the engine itself uses for ``local_master`` (started once, stopped at the end)."""
    import warnings

    from pipelines.engines.spark import spark_session
    from pipelines.engines.spark_session import stop_session

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas")
        session = spark_session(local_master)
    yield session
    stop_session()


@pytest.fixture(scope="module")
def other_database_url(pg_server_url: str) -> Iterator[str]:
    """A second fresh database for the module (two engines' caches side by side)."""
    with scratch_database(pg_server_url, "test") as url:
        yield url


#: What the master logs once it is bound (it binds the ports itself: port 0 leaves no race to lose).
_BOUND = re.compile(r"Successfully started service '(sparkMaster|MasterUI)' on port (\d+)")


def _bound_ports(log: Path, master: subprocess.Popen[bytes], deadline: float) -> dict[str, int]:
    """The master's RPC and UI ports, read from its log as soon as it reports both."""
    while True:
        found = {name: int(port) for name, port in _BOUND.findall(log.read_text(errors="replace"))}
        if len(found) == 2:
            return found
        if time.monotonic() > deadline or master.poll() is not None:
            tail = log.read_text(errors="replace")[-1500:]
            pytest.fail(f"the Spark master did not report its ports:\n{tail}")
        time.sleep(0.5)


@dataclass(frozen=True)
class Cluster:
    """A running standalone cluster: its master URL and the environment to talk to it."""

    master: str
    ui_port: int
    #: The workers' temp folder: executors materialize the broadcast model under it.
    executor_tmp: Path

    def master_state(self) -> dict[str, object]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ui_port}/json/", timeout=5) as response:
            return dict(json.load(response))


def spark_env(**extra: str) -> dict[str, str]:
    """Environment of a Spark process on loopback whose Python workers run this interpreter."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREDCACHE_", "SPARK_", "PYSPARK_"))}
    env.update(SPARK_HOME=str(SPARK_HOME), SPARK_LOCAL_IP="127.0.0.1", PYSPARK_PYTHON=sys.executable, **extra)
    return env


@pytest.fixture(scope="session")
def spark_cli_env():
    """Build the environment of a `predcache` subprocess that drives Spark against a test database."""

    def make(url: str, home: Path) -> dict[str, str]:
        return spark_env(PREDCACHE_DATABASE_URL=url, PREDCACHE_HOME=str(home))

    return make


def _alive_workers(ui_port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json/", timeout=2) as response:
            return int(json.load(response).get("aliveworkers", 0))
    except OSError:
        return 0


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop a daemon this fixture started, with the executors it launched (its own process group)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@pytest.fixture(scope="module")
def spark_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A Spark standalone master and two 1-core workers on loopback, from pyspark's own jars."""
    work = tmp_path_factory.mktemp("spark-cluster")
    yield from standalone_cluster(work, spark_env(), workers=2)


@pytest.fixture(scope="module")
def bare_spark_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A standalone cluster (one 1-core worker) whose processes see neither the checkout nor this venv.

    No PYTHONPATH reaches its executors: what their Python imports comes from the interpreter the
    driver names (spark.pyspark.python / PYSPARK_PYTHON) and what the job ships.
    """
    work = tmp_path_factory.mktemp("bare-spark-cluster")
    env = {k: v for k, v in spark_env().items() if k not in {"PYTHONPATH", "PYSPARK_PYTHON", "VIRTUAL_ENV"}}
    yield from standalone_cluster(work, env, workers=1)


def standalone_cluster(work: Path, base_env: dict[str, str], *, workers: int) -> Iterator[Cluster]:
    """Run a master and ``workers`` 1-core workers under ``work`` until the generator is closed."""
    (work / "tmp").mkdir()
    env = {
        **base_env,
        "SPARK_WORKER_DIR": str(work / "work"),
        "SPARK_DAEMON_MEMORY": "256m",
        "TMPDIR": str(work / "tmp"),
    }
    spark_class = str(SPARK_HOME / "bin" / "spark-class")
    daemons: list[subprocess.Popen[bytes]] = []

    def start(name: str, *args: str) -> None:
        command = [spark_class, *args]
        with (work / f"{name}.log").open("wb") as log:  # the daemon keeps its own copy of the descriptor
            daemons.append(
                subprocess.Popen(command, env=env, cwd=work, stdout=log, stderr=log, start_new_session=True)
            )

    try:
        loopback = ["--host", "127.0.0.1"]
        start("master", MASTER_CLASS, *loopback, "--port", "0", "--webui-port", "0")
        deadline = time.monotonic() + CLUSTER_START_SECONDS
        ports = _bound_ports(work / "master.log", daemons[0], deadline)
        master, ui_port = f"spark://127.0.0.1:{ports['sparkMaster']}", ports["MasterUI"]
        small = ["--cores", "1", "--memory", "1g"]
        for i in range(1, workers + 1):
            start(f"worker{i}", WORKER_CLASS, *loopback, *small, "--webui-port", "0", master)
        while _alive_workers(ui_port) < workers:
            if time.monotonic() > deadline or any(d.poll() is not None for d in daemons):
                logs = "\n".join(p.read_text()[-1500:] for p in sorted(work.glob("*.log")))
                pytest.fail(f"the Spark standalone cluster did not come up:\n{logs}")
            time.sleep(1)
        yield Cluster(master=master, ui_port=ui_port, executor_tmp=work / "tmp")
    finally:
        for daemon in reversed(daemons):
            _stop(daemon)
