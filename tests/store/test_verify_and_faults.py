"""Verification checks each shard and the input again; data errors name the row; lock waits are bounded."""

from __future__ import annotations

import threading
from pathlib import Path

import pyarrow as pa
import pytest

from pipelines.core.keys import key_hash
from pipelines.core.model import load_model
from pipelines.core.score import PREDICTION_SCHEMA, ShardResult, score_table
from pipelines.core.shards import plan_shards
from pipelines.core.validate import REJECT_SCHEMA
from pipelines.errors import RowDataError, RunStateError, StoreError, TransientStoreError
from pipelines.store import ledger
from pipelines.store.db import IDLE_IN_TRANSACTION_TIMEOUT_MS, LOCK_TIMEOUT_MS, connection
from pipelines.store.writer import write_shard


def _table(n: int) -> pa.Table:
    return pa.table({"id": [f"k{i}" for i in range(n)], "x": [i / n for i in range(n)], "n": list(range(n))})


@pytest.fixture()
def scored(migrated_url: str, toy_models_dir: Path):  # type: ignore[no-untyped-def]
    """A run of 2+ shards, claimed by owner 't', every shard written."""
    model = load_model(toy_models_dir, "toy")
    table = _table(120)
    shards = plan_shards(key_hash(table["id"]), 40)
    with connection(migrated_url, autocommit=True) as conn:
        with conn.transaction():
            version_id = ledger.register_version(conn, model)
            run_id = ledger.create_run(
                conn,
                version_id=version_id,
                model=model,
                engine="test",
                input_uri=f"/in/v{id(table)}",
                fingerprint="planned-fp",
                shard_rows=40,
                shards=shards,
            )
        ledger.start_attempt(conn, run_id, "test", owner="t")
    return migrated_url, model, run_id, version_id, table, shards


def _write_all(url: str, model, run_id: int, version_id: int, table: pa.Table, shards) -> None:  # type: ignore[no-untyped-def]
    from pipelines.core.shards import assign_shards

    pos = assign_shards(key_hash(table["id"]), shards)
    with connection(url, autocommit=True) as conn:
        for i, shard in enumerate(shards):
            part = table.filter(pa.array(pos == i))
            result = score_table(shard.shard_id, part, model, batch_rows=64)
            write_shard(conn, run_id=run_id, version_id=version_id, result=result, attempt=1, started=0.0)


def test_verify_fails_when_a_shard_read_other_rows_than_planned_even_if_totals_match(scored) -> None:  # type: ignore[no-untyped-def]
    url, model, run_id, version_id, table, shards = scored
    assert len(shards) >= 2
    _write_all(url, model, run_id, version_id, table, shards)
    a, b = shards[0].shard_id, shards[1].shard_id
    with connection(url, autocommit=True) as conn:
        conn.execute(
            "UPDATE run_shards SET rows_planned = rows_planned + 1 WHERE run_id = %s AND shard_id = %s",
            (run_id, a),
        )
        conn.execute(
            "UPDATE run_shards SET rows_planned = rows_planned - 1 WHERE run_id = %s AND shard_id = %s",
            (run_id, b),
        )
        with pytest.raises(
            RunStateError, match=rf"2 shard\(s\) read other rows than planned \(shard {a} read"
        ):
            ledger.verify_run(conn, run_id, max_reject_fraction=0.0, owner="t")
    with connection(url) as conn:
        assert ledger.get_run(conn, run_id).status == "failed"


def test_verify_fails_when_the_input_was_rewritten_during_the_run(scored) -> None:  # type: ignore[no-untyped-def]
    url, model, run_id, version_id, table, shards = scored
    _write_all(url, model, run_id, version_id, table, shards)
    with connection(url, autocommit=True) as conn:
        with pytest.raises(RunStateError, match="changed after it was planned"):
            ledger.verify_run(conn, run_id, max_reject_fraction=0.0, owner="t", fingerprint="rewritten-fp")
        run = ledger.get_run(conn, run_id)
    assert run.status == "failed" and "changed after it was planned" in (run.error or "")


def test_a_value_the_database_refuses_is_a_data_error_naming_shard_and_row(scored) -> None:  # type: ignore[no-untyped-def]
    url, model, run_id, version_id, table, shards = scored
    predictions = pa.table(
        [
            pa.array(["ok1", "bad\x00key"]),
            pa.array([0.5, 0.5], pa.float32()),
            pa.array([1, 1], pa.int64()),
            pa.nulls(2, pa.string()),
            pa.array([1, 2], pa.int64()),
        ],
        schema=PREDICTION_SCHEMA,
    )
    result = ShardResult(shards[0].shard_id, 2, predictions, REJECT_SCHEMA.empty_table())
    with connection(url, autocommit=True) as conn:
        with pytest.raises(
            RowDataError,
            match=rf"shard {shards[0].shard_id} of run {run_id}.*row 2 \(key 'bad\\x00key'\).*cannot help",
        ) as info:
            write_shard(conn, run_id=run_id, version_id=version_id, result=result, attempt=1, started=0.0)
        pending = [s.shard_id for s in ledger.planned_shards(conn, run_id, pending_only=True)]
    assert not info.value.retryable and shards[0].shard_id in pending


def test_sessions_bound_lock_waits_and_idle_transactions_and_use_keepalives(migrated_url: str) -> None:
    with connection(migrated_url) as conn:
        lock = conn.execute("SHOW lock_timeout").fetchone()
        idle = conn.execute("SHOW idle_in_transaction_session_timeout").fetchone()
        params = conn.info.get_parameters()
    assert lock == (f"{LOCK_TIMEOUT_MS // 1000}s",) and idle == (
        f"{IDLE_IN_TRANSACTION_TIMEOUT_MS // 60000}min",
    )
    assert params["keepalives"] == "1" and int(params["keepalives_idle"]) <= 60


def test_a_lock_timeout_behind_a_frozen_writer_is_retryable(scored) -> None:  # type: ignore[no-untyped-def]
    url, model, run_id, version_id, table, shards = scored
    result = score_table(shards[0].shard_id, _table(1), model, batch_rows=8)
    frozen = threading.Event()
    done = threading.Event()

    def freeze() -> None:
        with connection(url) as holder:
            holder.execute("SELECT 1 FROM run_shards WHERE run_id = %s FOR UPDATE", (run_id,))
            frozen.set()
            done.wait(30)

    thread = threading.Thread(target=freeze)
    thread.start()
    frozen.wait(10)
    try:
        with connection(url, autocommit=True) as conn:
            conn.execute("SET lock_timeout = '300ms'")
            with pytest.raises(TransientStoreError, match="interrupted") as info:
                write_shard(conn, run_id=run_id, version_id=version_id, result=result, attempt=1, started=0.0)
    finally:
        done.set()
        thread.join()
    assert info.value.retryable and isinstance(info.value, StoreError)


def test_a_table_whose_first_chunk_is_empty_is_copied_intact(scored) -> None:  # type: ignore[no-untyped-def]
    url, model, run_id, version_id, table, shards = scored
    good = score_table(shards[0].shard_id, _table(3), model, batch_rows=8)
    chunked = pa.concat_tables([good.predictions.schema.empty_table(), good.predictions])
    result = ShardResult(shards[0].shard_id, 3, chunked, REJECT_SCHEMA.empty_table())
    with connection(url, autocommit=True) as conn:
        assert write_shard(conn, run_id=run_id, version_id=version_id, result=result, attempt=1, started=0.0)
        keys = [
            r[0]
            for r in conn.execute(
                f"SELECT key FROM {ledger.partition_name(version_id)} WHERE run_id = %s ORDER BY key",
                (run_id,),
            )
        ]
    assert keys == ["k0", "k1", "k2"]
