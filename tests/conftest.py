"""Shared fixtures: a real PostgreSQL (embedded, or PREDCACHE_DATABASE_URL), real data, settings.

Each test module gets its own fresh database on the server, dropped afterwards.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pipelines.settings import DEFAULT_MODELS_DIR, Settings
from pipelines.store.scratch import scratch_database

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """URL of the server under test: PREDCACHE_DATABASE_URL when set, else an embedded one.

    The embedded server's data lives outside pytest's basetemp, which pytest prunes at the
    start of other sessions (a concurrent session would delete a running server's files).
    """
    configured = os.environ.get("PREDCACHE_DATABASE_URL")
    if configured:
        yield configured
        return
    from pipelines.store.db import embedded_url

    root = Path(tempfile.mkdtemp(prefix="predcache-test-pg-"))
    try:
        yield embedded_url(root / "data")
    finally:
        _stop_embedded(root / "data")
        shutil.rmtree(root, ignore_errors=True)


def _stop_embedded(pgdata: Path) -> None:
    from pipelines.store.db import stop_embedded

    stop_embedded(pgdata, delete=True)  # as root its data may live outside ``pgdata`` (a symlink)


@pytest.fixture(scope="module")
def database_url(pg_server_url: str) -> Iterator[str]:
    """A new, empty database for the test module (the schema is applied by the code under test)."""
    with scratch_database(pg_server_url, "test") as url:
        yield url


@pytest.fixture(scope="module")
def new_database(pg_server_url: str) -> Iterator[Callable[[], str]]:
    """Factory: a new, empty database per call, for tests that need more than their module's one.

    Every database it made is dropped when the module's tests are done.
    """
    with contextlib.ExitStack() as stack:
        yield lambda: stack.enter_context(scratch_database(pg_server_url, "test"))


@pytest.fixture(scope="module")
def migrated_url(database_url: str) -> str:
    from pipelines.store.db import migrate

    migrate(database_url)
    return database_url


@pytest.fixture(scope="session")
def flights_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real flights of 2013-07-01..2013-07-07 as a day-partitioned Parquet dataset."""
    from datetime import date

    from pipelines.data.flights import write_flights

    out = tmp_path_factory.mktemp("flights")
    write_flights(out, start=date(2013, 7, 1), end=date(2013, 7, 7))
    return out


@pytest.fixture()
def settings_for(tmp_path: Path):
    """Build Settings for a database URL, with local state in the test's tmp folder."""

    def make(url: str, **overrides: object) -> Settings:
        values: dict[str, object] = {
            "database_url": url,
            "home": tmp_path / "home",
            "models_dir": DEFAULT_MODELS_DIR,
            "workers": 2,
        }
        values.update(overrides)
        return Settings(**values)  # type: ignore[arg-type]

    return make


def subprocess_env(url: str, home: Path, **extra: str) -> dict[str, str]:
    """Environment for running the `predcache` CLI against the test database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREDCACHE_")}
    env.update({"PREDCACHE_DATABASE_URL": url, "PREDCACHE_HOME": str(home), **extra})
    return env


def build_toy_model(
    models_dir: Path, *, name: str = "toy", version: str = "1", weights: tuple[float, float] = (0.5, 0.25)
) -> Path:
    """A tiny real ONNX model: score = sigmoid(w0 * x + w1 * n), label = score > 0.5.

    Inputs: ``x`` float32 [N, 1], ``n`` int64 [N, 1]; key column ``id``.
    """
    import json

    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from pipelines.core.card import sha256_file

    nodes = [
        helper.make_node("Cast", ["n"], ["nf"], to=TensorProto.FLOAT),
        helper.make_node("Concat", ["x", "nf"], ["xn"], axis=1),
        helper.make_node("MatMul", ["xn", "w"], ["z"]),
        helper.make_node("Sigmoid", ["z"], ["s2"]),
        helper.make_node("Reshape", ["s2", "shape"], ["score"]),
        helper.make_node("Greater", ["score", "half"], ["gt"]),
        helper.make_node("Cast", ["gt"], ["label"], to=TensorProto.INT64),
    ]
    inits = [
        numpy_helper.from_array(np.array([[weights[0]], [weights[1]]], np.float32), "w"),
        numpy_helper.from_array(np.array([-1], np.int64), "shape"),
        numpy_helper.from_array(np.array(0.5, np.float32), "half"),
    ]
    graph = helper.make_graph(
        nodes,
        "toy",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1]),
            helper.make_tensor_value_info("n", TensorProto.INT64, [None, 1]),
        ],
        [
            helper.make_tensor_value_info("score", TensorProto.FLOAT, [None]),
            helper.make_tensor_value_info("label", TensorProto.INT64, [None]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    folder = models_dir / name / version
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(model, folder / "model.onnx")
    card = {
        "name": name,
        "version": version,
        "key": "id",
        "inputs": [{"name": "x", "dtype": "float32"}, {"name": "n", "dtype": "int64"}],
        "outputs": [{"name": "score", "dtype": "float32"}, {"name": "label", "dtype": "int64"}],
        "signatures": {"default": "model.onnx"},
        "artifacts": {
            "model.onnx": {
                "sha256": sha256_file(folder / "model.onnx"),
                "bytes": (folder / "model.onnx").stat().st_size,
            }
        },
    }
    (folder / "card.json").write_text(json.dumps(card, indent=2))
    return folder


@pytest.fixture()
def toy_models_dir(tmp_path: Path) -> Path:
    models = tmp_path / "models"
    build_toy_model(models)
    return models


@pytest.fixture(scope="session")
def toy_model_builder():
    """``build_toy_model`` for fixtures that need their own toy versions."""
    return build_toy_model


@dataclass(frozen=True)
class PlannedRun:
    """A run recorded in the ledger with its shard plan, as ``plan_run`` leaves it (no engine ran)."""

    url: str
    run_id: int
    version_id: int
    model: Any  # pipelines.core.model.Model
    table: Any  # pyarrow.Table: the run's input
    shards: list[Any]  # pipelines.core.shards.Shard


def plan_toy_run(
    url: str,
    models_dir: Path,
    table: Any,
    *,
    version: str = "1",
    input_uri: str = "/in",
    fingerprint: str = "f",
    shard_rows: int = 10_000,
) -> PlannedRun:
    """Register toy/<version> and record a run over ``table`` (columns id, x, n) with its shard plan."""
    from pipelines.core.keys import key_hash
    from pipelines.core.model import load_model
    from pipelines.core.shards import plan_shards
    from pipelines.store import ledger
    from pipelines.store.db import connection

    model = load_model(models_dir, "toy", version)
    shards = plan_shards(key_hash(table["id"]), shard_rows)
    with connection(url, autocommit=True) as conn, conn.transaction():
        version_id = ledger.register_version(conn, model)
        run_id = ledger.create_run(
            conn,
            version_id=version_id,
            model=model,
            engine="test",
            input_uri=input_uri,
            fingerprint=fingerprint,
            shard_rows=shard_rows,
            shards=shards,
        )
    return PlannedRun(url, run_id, version_id, model, table, shards)


@pytest.fixture(scope="session")
def planned_run() -> Callable[..., PlannedRun]:
    """``plan_toy_run``: a toy run in the ledger, planned and not scored, for store-level tests."""
    return plan_toy_run


#: Seconds a fresh virtual environment may take to install (pip reuses its cache of wheels).
VENV_INSTALL_TIMEOUT = 900


def _clean_env(**extra: str) -> dict[str, str]:
    drop = ("PREDCACHE_", "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYSPARK_", "SPARK_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def clean_env():  # type: ignore[no-untyped-def]
    """Build this environment without anything pointing Python at the checkout or a predcache setting."""
    return _clean_env


@pytest.fixture(scope="session")
def make_venv():  # type: ignore[no-untyped-def]
    """Create a fresh virtual environment with ``requirements`` pip-installed; returns its python.

    Not ``--system-site-packages``: that would see this environment, whose predcache is the
    checkout. pip reuses the wheels in its cache, so a rebuild downloads nothing new.
    """
    import subprocess
    import sys

    def make(folder: Path, requirements: list[str]) -> Path:
        subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True, env=_clean_env(), timeout=120)
        python = folder / "bin" / "python"
        install = [str(python), "-m", "pip", "install", "--quiet", "--no-compile"]
        result = subprocess.run(
            [*install, *requirements],
            env=_clean_env(),
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=VENV_INSTALL_TIMEOUT,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        return python

    return make


@pytest.fixture()
def other_database(pg_server_url: str) -> Iterator[str]:
    """A second migrated database on the same server (e.g. to compare two ways of filling a cache)."""
    from pipelines.store.db import migrate

    with scratch_database(pg_server_url, "other") as url:
        migrate(url)
        yield url
