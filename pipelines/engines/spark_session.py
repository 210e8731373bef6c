"""One SparkSession per Python process, checked before it starts: Java present, master reachable.

Spark fails slowly and verbosely when its environment is wrong (no Java: a gateway
traceback; a dead standalone master: retries for minutes). These checks turn both into
one-line ``EngineError``s within seconds, before any JVM is launched.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from pipelines.errors import EngineError, one_line

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

DEFAULT_MASTER = "local[*]"
DEFAULT_MASTER_PORT = 7077
#: Seconds to wait for a TCP connect to a standalone master before calling it unreachable.
MASTER_PROBE_SECONDS = 5.0
#: Seconds to wait for a cluster to grant the first executor (a master without workers hangs forever).
EXECUTOR_WAIT_SECONDS = 90.0

#: Settings every session gets (``engine_options['spark_conf']`` may override or add to them).
BASE_CONF: dict[str, str] = {
    "spark.app.name": "predcache",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    # Reused Python workers keep their ONNX session and database connection across tasks.
    "spark.python.worker.reuse": "true",
    "spark.sql.shuffle.partitions": "4",
    "spark.sql.session.timeZone": "UTC",
    # Fewer, larger Arrow batches into mapInArrow (a shard is 20k rows by default): less per-batch overhead.
    "spark.sql.execution.arrow.maxRecordsPerBatch": "65536",
    # A run lists its files itself: no parallel listing job for inputs of a few hundred files.
    "spark.sql.sources.parallelPartitionDiscovery.threshold": "100000",
}
#: Local mode binds to loopback: no dependency on the machine's network interfaces.
LOCAL_CONF: dict[str, str] = {"spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1"}

#: Errors only. The root level stays WARN (Spark's shell default, so it does not announce a
#: level change on start); the appender's threshold drops the warnings.
_LOG4J2 = """\
rootLogger.level = warn
rootLogger.appenderRef.stderr.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.filter.threshold.type = ThresholdFilter
appender.console.filter.threshold.level = error
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{HH:mm:ss} %p %c{1}: %m%n
"""

_lock = threading.Lock()
_active: tuple[tuple[str, tuple[tuple[str, str], ...]], SparkSession] | None = None


def java_executable(java_home: str | None, path: str | None) -> str:
    """The ``java`` Spark's launcher will run (``$JAVA_HOME/bin/java``, else ``java`` on PATH).

    Raises:
        EngineError: no Java found.
    """
    if java_home:
        candidate = Path(java_home) / "bin" / "java"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
        raise EngineError(
            f"JAVA_HOME is {java_home} but {candidate} is not an executable; point JAVA_HOME at a JDK 17 "
            "or 21 (the Spark engine needs Java), or use --engine beam"
        )
    found = shutil.which("java", path=path)
    if found is None:
        raise EngineError(
            "Java was not found (no JAVA_HOME, no java on PATH); install a JDK 17 or 21 and set JAVA_HOME "
            "(the Spark engine needs Java), or use --engine beam"
        )
    return found


def master_addresses(master: str) -> list[tuple[str, int]]:
    """(host, port) of each master of a ``spark://h1:p1,h2:p2`` URL; empty for other masters."""
    if not master.startswith("spark://"):
        return []
    addresses = []
    for part in master[len("spark://") :].split(","):
        host, _, port = part.strip().rpartition(":")
        if not host:
            host, port = port, str(DEFAULT_MASTER_PORT)
        try:
            addresses.append((host.strip("[]"), int(port)))
        except ValueError:
            raise EngineError(
                f"Spark master URL {master} has a bad port '{port}'; use spark://host:7077"
            ) from None
    return addresses


def probe_master(master: str, *, timeout: float = MASTER_PROBE_SECONDS) -> None:
    """Fail fast unless some master of a standalone URL accepts a TCP connection.

    Raises:
        EngineError: no master answered within ``timeout`` seconds.
    """
    reasons = []
    for host, port in master_addresses(master):
        try:
            with socket.create_connection((host, port), timeout=timeout):
                return
        except OSError as exc:
            reasons.append(f"{host}:{port}: {exc.strerror or type(exc).__name__}")
    if reasons:
        raise EngineError(
            f"Spark master {master} is unreachable ({'; '.join(reasons)}); start it, fix --spark-master "
            "(PREDCACHE_SPARK_MASTER), or use --spark-master 'local[*]'"
        )


def _log_config() -> Path:
    path = Path(tempfile.gettempdir()) / "predcache-spark-log4j2.properties"
    if not path.is_file() or path.read_text() != _LOG4J2:
        path.write_text(_LOG4J2)
    return path


def session_conf(master: str, overrides: dict[str, str] | None = None) -> dict[str, str]:
    """The full configuration of a session for ``master``."""
    conf = dict(BASE_CONF)
    if master.startswith("local"):
        conf.update(LOCAL_CONF)
    conf["spark.driver.extraJavaOptions"] = f"-Dlog4j2.configurationFile=file:{_log_config()}"
    conf.update(overrides or {})
    return conf


def _wait_for_executors(session: SparkSession, master: str, timeout: float) -> None:
    tracker = session.sparkContext._jsc.sc().statusTracker()
    deadline = time.monotonic() + timeout
    while len(tracker.getExecutorInfos()) < 2:  # the driver is listed too
        if time.monotonic() > deadline:
            raise EngineError(
                f"Spark master {master} granted no executor within {timeout:.0f} s; check that workers are "
                "registered with it and have the cores and memory the job asks for"
            )
        time.sleep(0.5)


def _start(master: str, conf: dict[str, str]) -> SparkSession:
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.master(master)
    for key, value in conf.items():
        builder = builder.config(key, value)
    try:
        session = builder.getOrCreate()
    except Exception as exc:  # py4j / PySpark raise untyped startup errors
        reason = one_line(exc, limit=300)
        raise EngineError(
            f"Spark could not start with master {master} ({reason}); check --spark-master and Spark settings"
        ) from exc
    session.sparkContext.setLogLevel("ERROR")
    # py4j logs at INFO from __del__ during interpreter shutdown, after log streams are closed.
    logging.getLogger("py4j").setLevel(logging.WARNING)
    # Executors run this interpreter unless spark.pyspark.python or PYSPARK_PYTHON says otherwise
    # (Spark's precedence; a driver started from plain Python ignores the setting, and would
    # fall back to a bare 'python3', which lacks onnxruntime).
    session.sparkContext.pythonExec = (
        conf.get("spark.pyspark.python") or os.environ.get("PYSPARK_PYTHON") or sys.executable
    )
    return session


def get_session(
    master: str = DEFAULT_MASTER,
    conf: dict[str, str] | None = None,
    *,
    executor_wait: float = EXECUTOR_WAIT_SECONDS,
) -> SparkSession:
    """This process's SparkSession for ``master`` (started on first use, then shared).

    A different master or configuration stops the current session and starts a new one
    (a JVM holds one SparkContext).

    Raises:
        EngineError: Java is missing, the master is unreachable, or Spark failed to start.
    """
    global _active
    full = session_conf(master, conf)
    key = (master, tuple(sorted(full.items())))
    with _lock:
        if _active is not None and _active[0] == key and not _active[1].sparkContext._jsc.sc().isStopped():
            return _active[1]
        java_executable(os.environ.get("JAVA_HOME"), os.environ.get("PATH"))
        probe_master(master)
        _stop_locked()
        session = _start(master, full)
        _active = (key, session)
    if master_addresses(master):
        try:
            _wait_for_executors(session, master, executor_wait)
        except EngineError:
            stop_session()
            raise
    return session


def _stop_locked() -> None:
    global _active
    if _active is not None:
        session = _active[1]
        _active = None
        session.stop()


def stop_session() -> None:
    """Stop this process's SparkSession, if any (also runs at interpreter exit)."""
    with _lock:
        _stop_locked()


atexit.register(stop_session)
