"""A toy run with one shard planned, and the JobSpec a shard worker scores it with."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pytest

from pipelines.core.keys import key_hash
from pipelines.core.model import load_model
from pipelines.core.shards import Shard, plan_shards
from pipelines.engines.spec import JobSpec
from pipelines.store import ledger
from pipelines.store.db import connection


@dataclass(frozen=True)
class ToyShard:
    spec: JobSpec
    shard: Shard
    rows: pa.Table
    run_id: int


@pytest.fixture()
def toy_shard(migrated_url: str, toy_models_dir: Path, request: pytest.FixtureRequest) -> ToyShard:
    """30 toy rows, planned as one shard of a new run (the input URI is the test's own)."""
    model = load_model(toy_models_dir, "toy")
    rows = pa.table({"id": [f"w{i}" for i in range(30)], "x": [0.1] * 30, "n": [1] * 30})
    shards = plan_shards(key_hash(rows["id"]), 100)
    with connection(migrated_url, autocommit=True) as conn, conn.transaction():
        version_id = ledger.register_version(conn, model)
        run_id = ledger.create_run(
            conn, version_id=version_id, model=model, engine="test", input_uri=f"/in/{request.node.name}",
            fingerprint="f", shard_rows=100, shards=shards,
        )  # fmt: skip
    spec = JobSpec(
        database_url=migrated_url, models_dir=toy_models_dir, model="toy", version="1", signature="default",
        run_id=run_id, version_id=version_id, attempt=1, key="id", columns=["id", "x", "n"], files=[],
        shards=shards, batch_rows=64, ort_threads=1, workers=1,
    )  # fmt: skip
    return ToyShard(spec, shards[0], rows, run_id)
