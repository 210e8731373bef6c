"""What every benchmark scenario shares: the model, the database server, and measuring a process tree."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from pipelines.store.scratch import create_database, drop_database

__all__ = ["drop_database", "fresh_database"]

MODEL = "flights_delay"
#: RSS of the scenario's process tree is sampled this often.
RSS_POLL_SECONDS = 0.2
#: The machine's own PostgreSQL (trust auth), used when PREDCACHE_DATABASE_URL is unset and it answers.
MACHINE_PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def fresh_database(server_url: str, label: str) -> str:
    """Create an empty database on the server; returns its URL (the tests' helper, named pc_bench_*)."""
    return create_database(server_url, f"bench_{label}")


def tcp_address(url: str) -> tuple[str, int] | None:
    """(host, port) when ``url`` reaches the server over TCP, None for a unix socket."""
    info = conninfo_to_dict(url)
    host = str(info.get("host") or "")
    if not host or host.startswith("/"):
        return None
    return host, int(info.get("port") or 5432)


def server_version(url: str) -> str:
    with psycopg.connect(url) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "?"


def answers(url: str) -> bool:
    try:
        psycopg.connect(url, connect_timeout=3).close()
    except psycopg.Error:
        return False
    return True


@dataclass(frozen=True)
class TreeRun:
    """One scenario process: its exit, output, wall time and the peak summed RSS of its process tree."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float
    peak_rss_mb: float

    def last_json(self) -> dict[str, Any]:
        """The last line of stdout that is a JSON object (the scenario's result)."""
        for line in reversed(self.stdout.splitlines()):
            if line.startswith("{"):
                return dict(json.loads(line))
        raise RuntimeError(f"no JSON result on stdout; stderr tail: {self.stderr[-2000:]}")


def _tree_rss(process: Any) -> int:
    import psutil

    total = 0
    try:
        members = [process, *process.children(recursive=True)]
    except psutil.Error:
        return 0
    for member in members:
        try:
            total += member.memory_info().rss
        except psutil.Error:
            continue
    return total


def run_tree(command: list[str], env: dict[str, str], *, timeout: float | None = None) -> TreeRun:
    """Run ``command``, sampling the summed RSS of it and all its descendants every 0.2 s."""
    import psutil

    started = time.perf_counter()
    child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    done = threading.Event()

    def poll() -> None:
        nonlocal peak
        process = psutil.Process(child.pid)
        while not done.is_set():
            peak = max(peak, _tree_rss(process))
            done.wait(RSS_POLL_SECONDS)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        stdout, stderr = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        stdout, stderr = child.communicate()
    finally:
        done.set()
        poller.join()
    seconds = time.perf_counter() - started
    return TreeRun(child.returncode, stdout, stderr, seconds, round(peak / 2**20, 1))


def scenario_env(**extra: str) -> dict[str, str]:
    """This process's environment without PREDCACHE_* settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREDCACHE_")}
    env.update(extra)
    return env


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def print_json(result: dict[str, Any]) -> None:
    """A scenario's result: one JSON line on stdout (read back by ``TreeRun.last_json``)."""
    print(json.dumps(result), flush=True)


#: The peers' sink: a plain table with our predictions' columns and indexes, created before loading.
PEER_TABLE = "peer_predictions"
PEER_TABLE_DDL = (
    "CREATE TABLE peer_predictions (version_id integer NOT NULL, run_id bigint NOT NULL, key text NOT NULL, "
    "score real NOT NULL, label bigint, computed_at timestamptz NOT NULL DEFAULT now()); "
    "CREATE INDEX peer_predictions_key_idx ON peer_predictions (key, run_id); "
    "CREATE INDEX peer_predictions_run_idx ON peer_predictions (run_id)"
)
PEER_COLUMNS = ("version_id", "run_id", "key", "score", "label")
#: What the peers write into version_id and run_id (constants: they have no ledger).
PEER_VERSION_ID = 1
PEER_RUN_ID = 1


def create_peer_table(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(PEER_TABLE_DDL)  # type: ignore[arg-type]  # constant DDL
