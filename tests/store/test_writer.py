from __future__ import annotations

import threading
from pathlib import Path

import pyarrow as pa
import pytest

from pipelines.core.score import score_table
from pipelines.store import ledger
from pipelines.store.db import connection
from pipelines.store.writer import write_shard


def _input(n: int) -> pa.Table:
    return pa.table(
        {"id": [f"k{i}" for i in range(n)], "x": [float(i) for i in range(n)], "n": list(range(n))}
    )


@pytest.fixture()
def planned(migrated_url: str, toy_models_dir: Path, planned_run):
    run = planned_run(migrated_url, toy_models_dir, _input(100), input_uri=str(toy_models_dir))
    result = score_table(run.shards[0].shard_id, run.table, run.model, batch_rows=7)
    return migrated_url, run.run_id, run.version_id, result


def _stored(url: str, run_id: int, version_id: int) -> tuple[int, int]:
    """Rows of the run in its version's table (a new version's table is attached at verify)."""
    table = ledger.partition_name(version_id)
    with connection(url) as conn:
        row = conn.execute(
            f"SELECT count(*), count(DISTINCT key) FROM {table} WHERE run_id = %s", (run_id,)
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def test_a_new_versions_table_is_attached_and_indexed_when_its_first_run_verifies(planned) -> None:
    url, run_id, version_id, result = planned
    with connection(url, autocommit=True) as conn:
        write_shard(conn, run_id=run_id, version_id=version_id, result=result, attempt=1, started=0.0)
        assert conn.execute("SELECT count(*) FROM predictions WHERE run_id = %s", (run_id,)).fetchone() == (
            0,
        )
        with conn.transaction():
            ledger.start_attempt(conn, run_id, "test", owner="test")
            ledger.verify_run(conn, run_id, max_reject_fraction=0.0, owner="test")
        assert conn.execute("SELECT count(*) FROM predictions WHERE run_id = %s", (run_id,)).fetchone() == (
            100,
        )
        indexes = conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE tablename = %s ORDER BY 1",
            (ledger.partition_name(version_id),),
        ).fetchall()
        assert [i[0].split(" USING ")[1] for i in indexes] == ["btree (key, run_id)", "btree (run_id)"]
        assert ledger.attach_partition(conn, version_id) is False


def test_a_shard_written_twice_is_stored_once(planned) -> None:
    url, run_id, version_id, result = planned
    with connection(url, autocommit=True) as conn:
        first = write_shard(conn, run_id=run_id, version_id=version_id, result=result, attempt=1, started=0.0)
        second = write_shard(
            conn, run_id=run_id, version_id=version_id, result=result, attempt=2, started=0.0
        )
    assert (first, second) == (True, False)
    assert _stored(url, run_id, version_id) == (100, 100)


def test_concurrent_writers_of_one_shard_store_it_exactly_once(planned) -> None:
    url, run_id, version_id, result = planned
    outcomes: list[bool] = []

    def write() -> None:
        with connection(url, autocommit=True) as conn:
            outcomes.append(
                write_shard(conn, run_id=run_id, version_id=version_id, result=result, attempt=1, started=0.0)
            )

    threads = [threading.Thread(target=write) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == [False, False, False, True]
    assert _stored(url, run_id, version_id) == (100, 100)


def test_a_failed_write_leaves_neither_rows_nor_done_marker(planned) -> None:
    url, run_id, version_id, result = planned
    with connection(url, autocommit=True) as conn:
        with pytest.raises(Exception, match="writing shard"):
            write_shard(conn, run_id=run_id, version_id=999_999, result=result, attempt=1, started=0.0)
        pending = ledger.planned_shards(conn, run_id, pending_only=True)
    assert [s.shard_id for s in pending] == [result.shard_id]
    assert _stored(url, run_id, version_id) == (0, 0)


def test_stored_scores_are_the_model_scores_bit_for_bit(planned) -> None:
    url, run_id, version_id, result = planned
    with connection(url, autocommit=True) as conn:
        write_shard(conn, run_id=run_id, version_id=version_id, result=result, attempt=1, started=0.0)
        table = ledger.partition_name(version_id)
        rows = dict(
            conn.execute(f"SELECT key, score::float8 FROM {table} WHERE run_id = %s", (run_id,)).fetchall()
        )
    expected = dict(
        zip(result.predictions["key"].to_pylist(), result.predictions["score"].to_pylist(), strict=True)
    )
    assert rows == expected
