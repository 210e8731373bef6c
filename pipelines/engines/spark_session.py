"""One SparkSession per Python process, checked before it starts: Java present, master reachable.

Spark fails slowly and verbosely when its environment is wrong (no Java: a gateway
traceback; a dead standalone master: retries for minutes). These checks turn both into
one-line ``EngineError``s within seconds, before any JVM is launched.

The session is started once and shared by every run of the process (a backfill's days). Its
driver JVM only schedules Python tasks (``engines.spark``), so it is tuned to start fast rather
than to run long: the C1 compiler only, the serial collector, and the classes of Spark kept in a
class-data-sharing archive that the first session on a machine writes as it exits
(``jvm_options``; measured: JVM CPU to a ready session 12.5 s -> 6.8 s -> ~4 s).

Why no session across the tasks of a DAG run: Airflow 3 runs every task instance in a process
of its own (the task SDK supervisor forks one per try), and a SparkContext lives in the JVM
its Python process launched, so it cannot outlive the task. Only the ``score`` task starts
Spark; the other steps (plan, verify, publish, observe) need no session at all. Reusing a JVM
across DAG runs would take a long-lived Spark Connect server or standalone cluster that the
tasks attach to (``--spark-master spark://...`` already does the latter; the fixed cost left per
task is then the Python side, not the JVM).
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import logging
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
    # Reused Python workers keep their ONNX session and database connection across tasks.
    "spark.python.worker.reuse": "true",
    "spark.sql.session.timeZone": "UTC",
}
#: Driver JVM flags for a JVM that schedules and does not compute: C1 alone compiles what a short
#: run needs at a fraction of C2's CPU; the serial collector starts no GC threads. Unified logging
#: goes to stderr (the run log), errors only: CDS reports every class it cannot archive.
JVM_OPTIONS = ("-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-Xlog:disable", "-Xlog:all=error:stderr")
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
#: Where this process's driver JVM writes (None: the stderr it inherited).
_jvm_log: Path | None = None


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


@functools.cache
def class_archive_option(java: str, classpath: str) -> str:
    """The JVM flag that uses this machine's class-data-sharing archive of Spark, or writes it on exit.

    One archive per JDK, pyspark and extra class path (a mismatched archive is ignored by the JVM,
    silently with ``JVM_OPTIONS``). The JVM writes it as it exits, after the Python process is gone,
    once per machine; a half-written file has no header yet and is ignored too. Cached per process,
    so an archive that appears meanwhile does not change the session's configuration.
    """
    import pyspark

    java_real = os.path.realpath(java)
    identity = f"{java_real}|{os.stat(java_real).st_mtime_ns}|{pyspark.__version__}|{classpath}"
    name = hashlib.sha256(identity.encode()).hexdigest()[:16]
    archive = Path(tempfile.gettempdir()) / "predcache-spark-cds" / f"{name}.jsa"
    if archive.is_file():
        return f"-XX:SharedArchiveFile={archive}"
    archive.parent.mkdir(parents=True, exist_ok=True)
    return f"-XX:ArchiveClassesAtExit={archive}"


def session_conf(
    master: str, overrides: dict[str, str] | None = None, *, java: str | None = None
) -> dict[str, str]:
    """The full configuration of a session for ``master``; ``java`` adds the class archive flag."""
    conf = dict(BASE_CONF)
    if master.startswith("local"):
        conf.update(LOCAL_CONF)
    overrides = overrides or {}
    options = [f"-Dlog4j2.configurationFile=file:{_log_config()}", *JVM_OPTIONS]
    if java is not None:
        classpath = "|".join(overrides.get(k, "") for k in ("spark.jars", "spark.driver.extraClassPath"))
        options.append(class_archive_option(java, classpath))
    conf["spark.driver.extraJavaOptions"] = " ".join(options)
    conf.update(overrides)
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


def _launch_jvm(master: str, conf: dict[str, str], log_path: Path) -> Any:
    """Launch the driver JVM with its stdout and stderr (and its Python workers') appended to ``log_path``."""
    from pyspark import SparkConf, SparkContext
    from pyspark.java_gateway import launch_gateway

    spark_conf = SparkConf().setMaster(master).setAll(list(conf.items()))
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:  # the JVM keeps its own copy of the descriptor
        gateway = launch_gateway(spark_conf, popen_kwargs={"stdout": log, "stderr": log})
    return SparkContext(conf=spark_conf, gateway=gateway)


def _start(master: str, conf: dict[str, str], log_path: Path | None) -> SparkSession:
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    global _jvm_log
    builder = SparkSession.builder.master(master)
    for key, value in conf.items():
        builder = builder.config(key, value)
    try:
        # A JVM launched outside a run's log redirect (ahead of planning) must not write to the
        # terminal; otherwise it inherits the stderr of the run that starts it.
        if log_path is not None and SparkContext._gateway is None:
            _launch_jvm(master, conf, log_path)
            _jvm_log = log_path
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
    log_path: Path | None = None,
) -> SparkSession:
    """This process's SparkSession for ``master`` (started on first use, then shared).

    A different master or configuration stops the current session and starts a new one
    (a JVM holds one SparkContext). ``log_path``: where a JVM launched now writes (default:
    the stderr of this process, inherited).

    Raises:
        EngineError: Java is missing, the master is unreachable, or Spark failed to start.
    """
    global _active
    java = java_executable(os.environ.get("JAVA_HOME"), os.environ.get("PATH"))
    full = session_conf(master, conf, java=java)
    key = (master, tuple(sorted(full.items())))
    with _lock:
        if _active is not None and _active[0] == key and not _active[1].sparkContext._jsc.sc().isStopped():
            return _active[1]
        probe_master(master)
        _stop_locked()
        session = _start(master, full, log_path)
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


def jvm_log() -> Path | None:
    """Where this process's driver JVM writes, if it was launched with a log of its own."""
    return _jvm_log


def stop_session() -> None:
    """Stop this process's SparkSession, if any (also runs at interpreter exit)."""
    with _lock:
        _stop_locked()


atexit.register(stop_session)
