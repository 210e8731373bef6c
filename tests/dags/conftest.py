"""Airflow fixtures: Airflow homes on SQLite metadata, the reference model, fresh caches, a webhook.

Airflow runs in subprocesses (``airflow dags test``, ``airflow scheduler``...) exactly as an operator
runs it; the pytest process itself only parses DAG files. The metadata database is migrated once
per session and copied into each new Airflow home (``airflow db migrate`` takes several seconds).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psycopg
import pytest

from pipelines.core.model import model_versions
from pipelines.settings import DEFAULT_MODELS_DIR

REPO = Path(__file__).resolve().parents[2]
DAGS_FOLDER = REPO / "dags"
MODEL = "flights_delay"
AIRFLOW = str(Path(sys.executable).with_name("airflow"))
JWT_SECRET = "predcache-tests-jwt-secret-0123456789"


@pytest.fixture(scope="session")
def flights_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The models folder holding the reference model (the repo's; built into a temp folder if absent)."""
    if model_versions(DEFAULT_MODELS_DIR, MODEL):
        return DEFAULT_MODELS_DIR
    from pipelines.modeling.registry import build_model

    models = tmp_path_factory.mktemp("models")
    (models / MODEL).mkdir()
    shutil.copy(DEFAULT_MODELS_DIR / MODEL / "recipe.py", models / MODEL / "recipe.py")
    build_model(MODEL, models)
    return models


def _airflow_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREDCACHE_", "AIRFLOW"))}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home / 'airflow.db'}",
        AIRFLOW__CORE__DAGS_FOLDER=str(DAGS_FOLDER),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__EXECUTOR="LocalExecutor",
        AIRFLOW__API_AUTH__JWT_SECRET=JWT_SECRET,
    )
    return env


@pytest.fixture(scope="session")
def airflow_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An Airflow home whose SQLite metadata database is migrated (copied by ``airflow_home``)."""
    home = tmp_path_factory.mktemp("airflow_template")
    done = subprocess.run([AIRFLOW, "db", "migrate"], env=_airflow_env(home), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return home


@pytest.fixture()
def webhook() -> Iterator[tuple[str, list[dict[str, object]]]]:
    """A local HTTP endpoint that records the JSON bodies posted to it."""
    received: list[dict[str, object]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/alerts", received
    server.shutdown()
    server.server_close()


@dataclass
class AirflowHome:
    """One Airflow installation (home + metadata DB) wired to one predcache cache database."""

    home: Path
    env: dict[str, str] = field(default_factory=dict)

    def run(self, *args: str, timeout: float = 300, **extra_env: str) -> subprocess.CompletedProcess[str]:
        """Run ``airflow <args>``; the output is kept for assertion messages."""
        return subprocess.run(
            [AIRFLOW, *args], env={**self.env, **extra_env}, capture_output=True, text=True, timeout=timeout
        )


@pytest.fixture(scope="module")
def airflow_home(
    airflow_template: Path,
    tmp_path_factory: pytest.TempPathFactory,
    flights_dir: Path,
    flights_models_dir: Path,
) -> Callable[[str], AirflowHome]:
    """Factory: a fresh Airflow home (copy of the migrated template) whose tasks use cache ``url``."""

    def make(url: str) -> AirflowHome:
        home = tmp_path_factory.mktemp("airflow_home")
        shutil.copy(airflow_template / "airflow.db", home / "airflow.db")
        env = _airflow_env(home)
        env.update(
            PREDCACHE_DATABASE_URL=url,
            PREDCACHE_HOME=str(home / "predcache_home"),
            PREDCACHE_MODELS_DIR=str(flights_models_dir),
            PREDCACHE_DATA_DIR=str(flights_dir),
        )
        return AirflowHome(home, env)

    return make


CacheState = tuple[list[tuple[str, str, float]], list[tuple[str, str]]]


def _cache_state(url: str) -> CacheState:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT key, version, score FROM predictions_current WHERE model = %s ORDER BY key", (MODEL,)
        ).fetchall()
        active = conn.execute("SELECT model, version FROM active_versions ORDER BY model").fetchall()
    return rows, active


@pytest.fixture(scope="session")
def cache_state() -> Callable[[str], CacheState]:
    """What readers of a cache see: (key, version, score) of every current prediction, and active versions."""
    return _cache_state
