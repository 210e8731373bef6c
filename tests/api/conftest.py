"""API fixtures: a cache with real runs of two toy versions, and the API served by a real uvicorn.

The cache is built once per test session (scoring two runs takes ~15 s): its own database on
the server under test (``pg_server_url``), dropped at the end, like tests/conftest.py's
``database_url`` but shared by every API test module.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from starlette.applications import Starlette

from pipelines.api import create_app
from pipelines.jobs import RunRequest, run_job
from pipelines.settings import Settings
from pipelines.store.db import connection, migrate
from pipelines.store.scratch import scratch_database

MODEL = "toy"
N_KEYS = 400
#: Two versions with different weights, so every key scores differently under each.
WEIGHTS = {"1": (0.5, 0.25), "2": (-0.5, 0.75)}
SERVER_START_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Cache:
    """A migrated database where toy/1 is published and toy/2 is scored and verified (not published)."""

    url: str
    models_dir: Path
    keys: list[str]
    scores: dict[str, dict[str, float]]  # version -> key -> stored score (float4 read as float8)


def _input(folder: Path) -> Path:
    keys = [f"2013-07-01_T{i:04d}_EWR" for i in range(N_KEYS)]
    table = pa.table({"id": keys, "x": [i / 100 for i in range(N_KEYS)], "n": [i % 3 for i in range(N_KEYS)]})
    folder.mkdir(parents=True)
    pq.write_table(table, folder / "part-0.parquet")
    return folder


@pytest.fixture(scope="session")
def api_cache(
    pg_server_url: str, tmp_path_factory: pytest.TempPathFactory, toy_model_builder: Callable[..., Path]
) -> Iterator[Cache]:
    """toy/1 and toy/2 scored by real Beam runs (``run_job``) over the same keys; toy/1 published."""
    root = tmp_path_factory.mktemp("api_cache")
    with scratch_database(pg_server_url, "api") as url:
        migrate(url)
        for version, weights in WEIGHTS.items():
            toy_model_builder(root / "models", version=version, weights=weights)
        source = _input(root / "input")
        settings = Settings(database_url=url, home=root / "home", models_dir=root / "models", workers=2)
        run_job(settings, RunRequest(model=MODEL, version="1", input=source, shard_rows=150, publish=True))
        run_job(settings, RunRequest(model=MODEL, version="2", input=source, shard_rows=150))
        scores: dict[str, dict[str, float]] = {}
        with connection(url) as conn:
            for version, key, score in conn.execute(
                "SELECT v.version, p.key, p.score::float8 FROM predictions p "
                "JOIN model_versions v USING (version_id) WHERE v.model = %s",
                (MODEL,),
            ):
                scores.setdefault(version, {})[key] = score
        keys = sorted(scores["1"])
        yield Cache(url=url, models_dir=root / "models", keys=keys, scores=scores)


def api_settings(url: str, home: Path, **overrides: object) -> Settings:
    """Settings for the API under test (no API keys unless given, whatever the environment says)."""
    values: dict[str, object] = {"database_url": url, "home": home, "api_keys": ""}
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@contextlib.contextmanager
def live_server(app: Starlette) -> Iterator[str]:
    """Serve ``app`` with uvicorn (lifespan on) on a free loopback port in a thread; yield its base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, lifespan="on", log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise RuntimeError("the API server did not start; see the log above")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


@pytest.fixture(scope="session")
def api_url(api_cache: Cache, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of the API (no API keys) over ``api_cache``."""
    app = create_app(api_settings(api_cache.url, tmp_path_factory.mktemp("api_home")))
    with live_server(app) as base:
        yield base


@pytest.fixture(scope="session")
def serve_app() -> Callable[[Starlette], contextlib.AbstractContextManager[str]]:
    """``live_server`` for tests that serve an app of their own (test modules cannot import conftest)."""
    return live_server


@pytest.fixture(scope="session")
def make_api_settings() -> Callable[..., Settings]:
    """``api_settings`` for tests that build an app of their own."""
    return api_settings
