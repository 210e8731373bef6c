"""`airflow backfill create` and `predcache backfill` over the same days leave the same cache.

Airflow 3's backfill only creates the DAG runs; a scheduler runs them. Here that is a real
``airflow scheduler`` (LocalExecutor, SQLite metadata) plus the Execution API its task
processes report to (``airflow api-server --apps execution``), both started for the test.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest

DAG_ID = "batch_predict_flights_delay"
MODEL = "flights_delay"
START, END = "2013-07-03", "2013-07-05"
BACKFILL_SECONDS = 360.0
FINISHED = ("success", "failed")
#: All three days at once: each day's engine job is small, the machine has two cores.
BACKFILL_OPTIONS = ("--max-active-runs", "3")

pytestmark = [pytest.mark.airflow, pytest.mark.slow]


#: Tries at a free port for the Execution API: another process may take the port we picked first.
PORT_ATTEMPTS = 3
API_START_SECONDS = 120.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _serving(proc: subprocess.Popen[bytes], port: int) -> bool:
    """Whether ``proc`` came up listening on ``port`` (False when it exited, e.g. the port was taken)."""
    deadline = time.monotonic() + API_START_SECONDS
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            time.sleep(0.5)
            continue
        time.sleep(1)  # a port someone else holds also answers: ours would exit on its bind error
        return proc.poll() is None
    return False


def _execution_api(stack: ExitStack, airflow: str, env: dict[str, str], log: Path) -> int:
    """Start the Execution API on a free port (its URL set in ``env`` for the scheduler), retrying with
    another port when the one picked was taken."""
    for _ in range(PORT_ATTEMPTS):
        port = _free_port()
        env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] = f"http://127.0.0.1:{port}/execution/"
        args = [airflow, "api-server", "--apps", "execution", "--host", "127.0.0.1", "--port", str(port)]
        if _serving(stack.enter_context(_daemon(args, env, log)), port):
            return port
    raise AssertionError(f"the Execution API did not start:\n{_tail(log)}")


@contextmanager
def _daemon(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``args`` in its own process group; stop that group (and only it) on exit."""
    with log.open("wb") as out:
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()


def _backfill_states(db: Path) -> list[str]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT state FROM dag_run WHERE dag_id = ? AND run_type = 'backfill' ORDER BY logical_date",
            (DAG_ID,),
        ).fetchall()
    return [row[0] for row in rows]


def _tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


def _airflow_backfill(home: Any) -> list[str]:
    """Register the DAG, create the backfill, run scheduler + Execution API until every run finished."""
    env = {**home.env, "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False"}
    for args in (
        ["dags", "reserialize"],
        ["backfill", "create", "--dag-id", DAG_ID, "--from-date", START, "--to-date", END, *BACKFILL_OPTIONS],
    ):
        done = home.run(*args, **env)
        assert done.returncode == 0, done.stderr[-3000:]
    env.update(
        AIRFLOW__CORE__PARALLELISM="2",
        # Only the backfill's runs: no run of "today" from the daily schedule.
        AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE="False",
    )
    airflow = str(Path(sys.executable).with_name("airflow"))
    api_log, scheduler_log = home.home / "api-server.out", home.home / "scheduler.out"
    with ExitStack() as stack:
        _execution_api(stack, airflow, env, api_log)
        scheduler = stack.enter_context(_daemon([airflow, "scheduler"], env, scheduler_log))
        deadline = time.monotonic() + BACKFILL_SECONDS
        states = _backfill_states(home.home / "airflow.db")
        while not (len(states) == 3 and all(s in FINISHED for s in states)):
            assert scheduler.poll() is None, f"the scheduler exited:\n{_tail(scheduler_log)}"
            assert time.monotonic() < deadline, (
                f"backfill runs {states}\n{_tail(scheduler_log)}\n{_tail(api_log)}"
            )
            time.sleep(2)
            states = _backfill_states(home.home / "airflow.db")
    return states


def _predcache(args: list[str], env: dict[str, str]) -> list[dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", *args], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def backfilled(
    airflow_home: Callable[[str], Any],
    new_database: Callable[[], str],
    flights_dir: Path,
    flights_models_dir: Path,
) -> dict[str, Any]:
    """One cache backfilled through Airflow, another through `predcache backfill`."""
    by_airflow, by_cli = new_database(), new_database()
    home = airflow_home(by_airflow)
    states = _airflow_backfill(home)
    cli_env = {**home.env, "PREDCACHE_DATABASE_URL": by_cli}
    days = _predcache(_backfill_args(flights_dir), cli_env)
    return {"states": states, "airflow": by_airflow, "cli": by_cli, "cli_days": days, "env": home.env}


def _backfill_args(flights_dir: Path) -> list[str]:
    template = f"{flights_dir}/date={{date}}"
    return [
        *("backfill", "--model", MODEL, "--input-template", template),
        *("--start", START, "--end", END, "--publish", "--json"),
    ]


def test_airflow_backfill_runs_every_day_successfully(backfilled: dict[str, Any]) -> None:
    assert backfilled["states"] == ["success"] * 3


def test_airflow_and_predcache_backfills_leave_the_same_cache(
    backfilled: dict[str, Any], cache_state: Callable[[str], Any]
) -> None:
    rows, active = cache_state(backfilled["airflow"])
    assert len(rows) > 2_000 and active == [(MODEL, "1")]
    assert (rows, active) == cache_state(backfilled["cli"])


def test_days_backfilled_by_airflow_are_skipped_by_predcache_backfill(
    backfilled: dict[str, Any], flights_dir: Path, cache_state: Callable[[str], Any]
) -> None:
    before = cache_state(backfilled["airflow"])
    env = {**backfilled["env"], "PREDCACHE_DATABASE_URL": backfilled["airflow"]}
    days = _predcache(_backfill_args(flights_dir), env)
    assert [(d["date"], d["skipped"]) for d in days] == [(d["date"], True) for d in backfilled["cli_days"]]
    assert cache_state(backfilled["airflow"]) == before
