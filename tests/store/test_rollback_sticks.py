"""Rollback sticks: a rolled-back run stays hidden until it is published again by its id."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from pipelines.core.keys import key_hash
from pipelines.core.model import load_model
from pipelines.core.score import score_table
from pipelines.core.shards import plan_shards
from pipelines.errors import RunStateError
from pipelines.store import ledger
from pipelines.store.db import connection
from pipelines.store.lookup import lookup
from pipelines.store.publish import RollbackResult, publish, rollback
from pipelines.store.writer import write_shard

KEYS = [f"k{i}" for i in range(30)]


def _verified_run(url: str, models_dir: Path, version: str, input_uri: str) -> int:
    model = load_model(models_dir, "toy", version)
    table = pa.table({"id": KEYS, "x": [i / 10 for i in range(30)], "n": [i % 3 for i in range(30)]})
    shards = plan_shards(key_hash(table["id"]), 1_000)
    with connection(url, autocommit=True) as conn:
        with conn.transaction():
            version_id = ledger.register_version(conn, model)
            run_id = ledger.create_run(
                conn,
                version_id=version_id,
                model=model,
                engine="test",
                input_uri=input_uri,
                fingerprint="f",
                shard_rows=1_000,
                shards=shards,
            )
        ledger.start_attempt(conn, run_id, "test", owner="t")
        result = score_table(shards[0].shard_id, table, model, batch_rows=64)
        write_shard(conn, run_id=run_id, version_id=version_id, result=result, attempt=1, started=0.0)
        ledger.verify_run(conn, run_id, max_reject_fraction=0.0, owner="t")
    return run_id


@pytest.fixture()
def models(tmp_path: Path, toy_model_builder) -> Path:  # type: ignore[no-untyped-def]
    toy_model_builder(tmp_path / "m", version="1", weights=(0.5, 0.25))
    toy_model_builder(tmp_path / "m", version="2", weights=(-0.5, 0.75))
    return tmp_path / "m"


def _visible_runs(url: str) -> set[int | None]:
    with connection(url) as conn:
        return {p.run_id for p in lookup(conn, "toy", KEYS)}


def _status(url: str, run_id: int) -> str:
    with connection(url) as conn:
        return ledger.get_run(conn, run_id).status


def test_a_rolled_back_run_is_not_published_again_by_a_plain_publish(migrated_url: str, models: Path) -> None:
    url = migrated_url
    with connection(url, autocommit=True) as conn:
        conn.execute("DELETE FROM active_versions")
    first = _verified_run(url, models, "1", "/in/a")
    with connection(url, autocommit=True) as conn:
        publish(conn, model="toy", version="1")
    second = _verified_run(url, models, "1", "/in/b")
    with connection(url, autocommit=True) as conn:
        publish(conn, model="toy", version="1")
        rollback(conn, model="toy")
        assert _status(url, second) == "rolled_back"
        again = publish(conn, model="toy", version="1")
    assert again.run_ids == [] and _status(url, second) == "rolled_back"
    assert _visible_runs(url) == {first}


def test_a_rolled_back_run_is_published_again_by_its_id(migrated_url: str, models: Path) -> None:
    url = migrated_url
    run = _verified_run(url, models, "1", "/in/c")
    with connection(url, autocommit=True) as conn:
        publish(conn, model="toy", version="1", run_ids=[run])
        rollback(conn, model="toy")
        publish(conn, model="toy", version="1", run_ids=[run])
    assert _status(url, run) == "published" and _visible_runs(url) == {run}


def test_a_plain_publish_takes_only_the_newest_verified_run_of_each_input(
    migrated_url: str, models: Path
) -> None:
    url = migrated_url
    older = _verified_run(url, models, "2", "/in/same")
    newer = _verified_run(url, models, "2", "/in/same")
    with connection(url, autocommit=True) as conn:
        result = publish(conn, model="toy", version="2")
        again = publish(conn, model="toy", version="2")
    assert result.run_ids == [newer] and again.run_ids == []
    assert _status(url, older) == "verified"


def test_rollback_reports_the_version_rolled_back_and_the_one_active_now(
    migrated_url: str, models: Path
) -> None:
    url = migrated_url
    v1 = _verified_run(url, models, "1", "/in/r1")
    v2 = _verified_run(url, models, "2", "/in/r2")
    with connection(url, autocommit=True) as conn:
        publish(conn, model="toy", version="1", run_ids=[v1])
        published = publish(conn, model="toy", version="2", run_ids=[v2])
        result = rollback(conn, model="toy")
    assert isinstance(result, RollbackResult)
    assert result.message() == (
        f"rolled back publish {published.publish_id} of toy/2 (runs [{v2}]); active now: toy/1"
    )
    assert _status(url, v2) == "rolled_back"


def test_rolling_back_the_only_publish_leaves_nothing_active(migrated_url: str, models: Path) -> None:
    url = migrated_url
    with connection(url, autocommit=True) as conn:
        conn.execute("UPDATE publishes SET rolled_back_at = now()")
        conn.execute("DELETE FROM active_versions")
    run = _verified_run(url, models, "1", "/in/only")
    with connection(url, autocommit=True) as conn:
        published = publish(conn, model="toy", version="1", run_ids=[run])
        result = rollback(conn, model="toy")
        with pytest.raises(RunStateError, match="no publish to roll back"):
            rollback(conn, model="toy")
    assert result.message() == (
        f"rolled back publish {published.publish_id} of toy/1 (runs [{run}]); active now: nothing"
    )
