"""`predcache airflow` (`make airflow`): a local Airflow 3 with the project's DAGs on the local cache.

What ``airflow standalone`` does, with the choices a trial of predcache needs made for it:

- ``AIRFLOW_HOME`` is ``PREDCACHE_HOME/airflow`` (SQLite metadata, LocalExecutor), never the repo;
- the DAG folder is the project's ``dags/``; the tasks use the same cache as the CLI (the embedded
  PostgreSQL in ``PREDCACHE_HOME/pg``, or ``PREDCACHE_DATABASE_URL``), started once here and handed
  to the tasks by URL, and the real 2013 flights written to ``PREDCACHE_HOME/data/flights`` if absent;
- the UI listens on 127.0.0.1 only, on a free port (or ``--port``);
- the schedule is off (``use_job_schedule``): the data is 2013's, so runs are triggered for a day
  (UI, REST API) or backfilled, and DAGs start unpaused so a triggered run starts at once;
- login is Airflow's simple auth manager: user ``admin``, whose password the API server generates
  on first start into ``AIRFLOW_HOME/simple_auth_manager_passwords.json.generated`` (as
  ``airflow standalone`` does); it is printed with the address.

Each Airflow component runs in its own session, so Ctrl-C reaches only this process, which then
stops every component and everything they started (SIGTERM, then SIGKILL after a grace period).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import FrameType

from pipelines.errors import AirflowError, ConfigError
from pipelines.resources import dags_dir
from pipelines.settings import Settings

HOST = "127.0.0.1"
ADMIN_USER = "admin"
PASSWORD_FILE = "simple_auth_manager_passwords.json.generated"
#: Components started after the API server (which serves the UI, the REST API and the Execution API).
BACKGROUND_COMPONENTS = ("scheduler", "dag-processor", "triggerer")
#: Health names of the components in ``/api/v2/monitor/health``.
HEALTH_COMPONENTS = ("metadatabase", "scheduler", "dag_processor", "triggerer")
PORT_TRIES = 3
READY_TIMEOUT_SECONDS = 240.0
STOP_GRACE_SECONDS = 20.0
POLL_SECONDS = 1.0
MIGRATE_TIMEOUT_SECONDS = 300.0
DEFAULT_PARALLELISM = 2
TRIAL_DAG = "batch_predict_flights_delay"
TRIAL_DAY = "2013-07-01"


@dataclass(frozen=True)
class LocalAirflow:
    """Where a running local Airflow is and how to log in.

    Attributes:
        url: Base URL of the UI and REST API (``http://127.0.0.1:PORT``).
        user: Login user of the simple auth manager.
        password: That user's password.
        password_file: File the API server keeps the generated passwords in.
        airflow_home: The ``AIRFLOW_HOME``.
        logs: Folder of the components' output (``<component>.out``).
        data_dir: Folder of the day-partitioned flights the DAG reads.
        check: Raises AirflowError when a component has exited.
    """

    url: str
    user: str
    password: str
    password_file: Path
    airflow_home: Path
    logs: Path
    data_dir: Path
    check: Callable[[], None]


def airflow_bin() -> Path:
    """The ``airflow`` executable of this Python environment."""
    path = Path(sys.executable).with_name("airflow")
    if not path.exists():
        raise ConfigError(
            f"{path} not found; install Airflow with `pip install -e '.[airflow]'` (or `make venv`)"
        )
    return path


def free_port() -> int:
    """A port free on 127.0.0.1 now (it may be taken before Airflow binds it: callers retry)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def airflow_env(*, airflow_home: Path, port: int, cache_url: str, data_dir: Path) -> dict[str, str]:
    """The environment of every Airflow component of the trial (the caller's, plus the trial's choices)."""
    env = dict(os.environ)
    # Tasks of the trial's DAGs run one after another; the default of 32 starts 32 idle workers.
    env.setdefault("AIRFLOW__CORE__PARALLELISM", str(DEFAULT_PARALLELISM))
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        AIRFLOW_HOME=str(airflow_home),
        AIRFLOW__CORE__DAGS_FOLDER=str(dags_dir()),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__EXECUTOR="LocalExecutor",
        AIRFLOW__CORE__AUTH_MANAGER="airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=f"{ADMIN_USER}:admin",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="False",
        AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="False",
        AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE="False",
        PREDCACHE_DATABASE_URL=cache_url,
        PREDCACHE_DATA_DIR=str(data_dir),
    )
    with_port(env, port)
    return env


def prepare_data(data_dir: Path) -> int:
    """Write the real 2013 flights to ``data_dir`` unless it already holds day folders; rows written."""
    if data_dir.is_dir() and any(data_dir.glob("date=*")):
        return 0
    from pipelines.data.flights import write_flights

    return write_flights(data_dir)


def _get_json(url: str, timeout: float = 5.0) -> object:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (our own loopback URL)
        return json.loads(response.read())


def _healthy(url: str, components: tuple[str, ...]) -> bool:
    try:
        health = _get_json(f"{url}/api/v2/monitor/health")
    except (OSError, ValueError):
        return False
    if not isinstance(health, dict):
        return False
    return all((health.get(name) or {}).get("status") == "healthy" for name in components)


def _last_line(path: Path) -> str:
    """The last non-empty line of a log (for one-line errors)."""
    lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1][:300] if lines else "(no output)"


def with_port(env: dict[str, str], port: int) -> None:
    """Point the UI, REST API and Execution API settings of ``env`` at ``port`` on 127.0.0.1."""
    env.update(
        AIRFLOW__API__HOST=HOST,
        AIRFLOW__API__PORT=str(port),
        AIRFLOW__API__BASE_URL=f"http://{HOST}:{port}",
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://{HOST}:{port}/execution/",
    )


class _Components:
    """The running Airflow processes, each in its own session; ``stop`` ends them and their children."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env = env
        self.logs = logs
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.out"

    def start(self, name: str, *args: str) -> None:
        """Start ``airflow <args>`` in a session of its own, its output in ``logs/<name>.out`` (replaced)."""
        with self.log(name).open("wb") as out:
            self.procs[name] = subprocess.Popen(
                [str(airflow_bin()), *args],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def check_alive(self) -> None:
        """Raise AirflowError when a component has exited."""
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise AirflowError(
                    f"airflow {name} exited with code {proc.returncode} ({_last_line(self.log(name))}); "
                    f"see {self.log(name)}"
                )

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """SIGTERM every component's process group, wait up to ``grace`` s, then SIGKILL what is left."""
        if threading.current_thread() is not threading.main_thread():
            self._stop(grace)
            return
        # A second Ctrl-C while stopping must not leave processes behind.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            self._stop(grace)
        finally:
            signal.signal(signal.SIGINT, previous)

    def _stop(self, grace: float) -> None:
        import psutil

        # The whole tree first: task processes may sit in sessions of their own.
        tree: list[psutil.Process] = []
        for proc in self.procs.values():
            with suppress(psutil.NoSuchProcess):
                root = psutil.Process(proc.pid)
                tree += [root, *root.children(recursive=True)]
        for proc in self.procs.values():
            if proc.poll() is None:
                with suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        _, alive = psutil.wait_procs(tree, timeout=grace)
        for proc in self.procs.values():
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        for straggler in alive:
            with suppress(psutil.NoSuchProcess):
                straggler.kill()
        psutil.wait_procs(alive, timeout=5)
        for proc in self.procs.values():
            proc.wait()
        self.procs.clear()


def _wait(until: Callable[[], bool], components: _Components, *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not until():
        components.check_alive()
        if time.monotonic() > deadline:
            raise AirflowError(f"{what} not ready after {timeout:.0f} s; see the logs in {components.logs}")
        time.sleep(POLL_SECONDS)


def _start_api_server(components: _Components, port: int | None) -> int:
    """Start the API server on ``port``, or on a free one (retried when another process takes it first)."""
    tries = 1 if port else PORT_TRIES
    attempt = 0
    while True:
        attempt += 1
        chosen = port or free_port()
        with_port(components.env, chosen)
        components.start("api-server", "api-server", "--host", HOST, "--port", str(chosen))
        try:
            _wait(
                partial(_healthy, f"http://{HOST}:{chosen}", ("metadatabase",)),
                components,
                timeout=READY_TIMEOUT_SECONDS,
                what="the Airflow API server",
            )
            return chosen
        except AirflowError:
            in_use = "address already in use" in components.log("api-server").read_text(errors="replace")
            components.stop()
            if not in_use:
                raise
            if attempt == tries:
                raise AirflowError(
                    f"port {chosen} on {HOST} is in use; pass a free one with `predcache airflow --port N`"
                ) from None


@contextmanager
def _only_trial(airflow_home: Path) -> Iterator[None]:
    """Hold ``AIRFLOW_HOME/trial.lock``: two trials on one home would share one SQLite metadata database."""
    import fcntl

    with (airflow_home / "trial.lock").open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AirflowError(
                f"a local Airflow already runs from {airflow_home}; "
                "stop it (Ctrl-C) or set another PREDCACHE_HOME"
            ) from None
        yield


@contextmanager
def local_airflow(
    settings: Settings,
    *,
    port: int | None = None,
    data_dir: Path | None = None,
    on_step: Callable[[str], None] = print,
) -> Iterator[LocalAirflow]:
    """Start Airflow (API server, scheduler, DAG processor, triggerer) and stop it all on exit.

    Args:
        settings: predcache settings (home, cache, models).
        port: Port of the UI and API on 127.0.0.1; None: a free one.
        data_dir: Day-partitioned flights for the DAG; None: ``PREDCACHE_HOME/data/flights``.
        on_step: Receives one line per start-up step.

    Yields:
        Where the running Airflow is and how to log in.

    Raises:
        AirflowError: A component exited or did not become healthy in time, the port is taken, or
            another trial runs from the same home.
        ConfigError: Airflow is not installed.
    """
    from pipelines.store.cache import cache_url

    home = settings.home.expanduser().resolve()
    airflow_home = home / "airflow"
    logs = airflow_home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with _only_trial(airflow_home):
        data_dir = (data_dir or home / "data" / "flights").resolve()
        rows = prepare_data(data_dir)
        on_step(f"data: {'wrote ' + str(rows) + ' flights to ' if rows else ''}{data_dir}")
        url = cache_url(settings)
        on_step(f"cache: {'PREDCACHE_DATABASE_URL' if settings.database_url else settings.embedded_pgdata}")
        env = airflow_env(airflow_home=airflow_home, port=port or 0, cache_url=url, data_dir=data_dir)
        on_step(f"airflow: AIRFLOW_HOME={airflow_home}, migrating its metadata database")
        _migrate(env, logs / "db-migrate.out")
        components = _Components(env, logs)
        try:
            base = f"http://{HOST}:{_start_api_server(components, port)}"
            for name in BACKGROUND_COMPONENTS:
                components.start(name, name)
            on_step(f"airflow: starting the scheduler, DAG processor and triggerer (logs in {logs})")
            _wait(
                partial(_healthy, base, HEALTH_COMPONENTS),
                components,
                timeout=READY_TIMEOUT_SECONDS,
                what="the Airflow scheduler, DAG processor and triggerer",
            )
            # Written by the API server on its first start, as `airflow standalone` relies on.
            password_file = Path(env.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE") or "")
            if not password_file.name:
                password_file = airflow_home / PASSWORD_FILE
            password = json.loads(password_file.read_text())[ADMIN_USER]
            yield LocalAirflow(
                url=base,
                user=ADMIN_USER,
                password=str(password),
                password_file=password_file,
                airflow_home=airflow_home,
                logs=logs,
                data_dir=data_dir,
                check=components.check_alive,
            )
        finally:
            components.stop()


def _migrate(env: dict[str, str], log: Path) -> None:
    """``airflow db migrate`` (creates the SQLite metadata database and airflow.cfg on first use)."""
    with log.open("wb") as out:
        migrated = subprocess.run(
            [str(airflow_bin()), "db", "migrate"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=MIGRATE_TIMEOUT_SECONDS,
        )
    if migrated.returncode != 0:
        raise AirflowError(f"`airflow db migrate` failed ({_last_line(log)}); see {log}")


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run_until_interrupted(
    settings: Settings, *, port: int | None = None, data_dir: Path | None = None
) -> None:
    """Start the local Airflow, print where it is and how to log in, and run until Ctrl-C (or SIGTERM).

    Raises:
        AirflowError: A component exited or did not become healthy in time.
    """
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        with local_airflow(settings, port=port, data_dir=data_dir) as airflow:
            print(
                "\nAirflow is up with the predcache DAGs (schedule off: the data is 2013's).\n"
                f"  UI:     {airflow.url}/dags/{TRIAL_DAG}\n"
                f"  login:  {airflow.user} / {airflow.password}   (kept in {airflow.password_file})\n"
                f"  try:    Trigger -> logical date {TRIAL_DAY} (any day of July-December 2013)\n"
                f"  logs:   {airflow.logs}\n"
                "Press Ctrl-C to stop.",
                flush=True,
            )
            try:
                while True:
                    time.sleep(POLL_SECONDS)
                    airflow.check()
            except KeyboardInterrupt:
                print("\nstopping Airflow...", flush=True)
    except KeyboardInterrupt:
        print("\ninterrupted during start-up; everything started is stopped", flush=True)
        return
    finally:
        signal.signal(signal.SIGTERM, previous)
    print("Airflow stopped.", flush=True)
