"""`predcache gc` (pipelines/store/retention.py) on a real PostgreSQL; runs written through the ledger."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pytest

from pipelines.cli import main
from pipelines.core.keys import key_hash
from pipelines.core.model import load_model
from pipelines.core.score import score_table
from pipelines.core.shards import plan_shards
from pipelines.store import ledger
from pipelines.store.db import connection
from pipelines.store.lookup import LOOKUP_SQL, lookup
from pipelines.store.publish import publish, rollback
from pipelines.store.retention import collect_garbage
from pipelines.store.writer import write_shard

N_KEYS = 2_000
KEYS = [f"2013-07-01_{i:05d}" for i in range(N_KEYS)]
RERUNS = 100


def _table(keys: slice) -> pa.Table:
    ids = range(N_KEYS)[keys]
    return pa.table({"id": [KEYS[i] for i in ids], "x": [i / 500 for i in ids], "n": [i % 3 for i in ids]})


def _run(
    url: str,
    models_dir: Path,
    version: str,
    *,
    verify: bool = True,
    fail: bool = False,
    keys: slice = slice(None),
) -> int:
    """One real run of toy/<version> over KEYS[keys] (one shard), through the ledger and the writer."""
    model = load_model(models_dir, "toy", version)
    table = _table(keys)
    shards = plan_shards(key_hash(table["id"]), 100_000)
    with connection(url, autocommit=True) as conn:
        with conn.transaction():
            version_id = ledger.register_version(conn, model)
            run_id = ledger.create_run(
                conn,
                version_id=version_id,
                model=model,
                engine="test",
                input_uri="/in/2013-07-01",
                fingerprint="same day",
                shard_rows=100_000,
                shards=shards,
            )
            ledger.start_attempt(conn, run_id, "test", owner="test")
        if fail:
            ledger.mark_failed(conn, run_id, "injected", owner="test")
            return run_id
        result = score_table(shards[0].shard_id, table, model, batch_rows=4096)
        write_shard(conn, run_id=run_id, version_id=version_id, result=result, attempt=1, started=0.0)
        if verify:
            with conn.transaction():
                ledger.verify_run(conn, run_id, max_reject_fraction=0.0, owner="test")
    return run_id


def _publish(url: str, version: str, run_id: int) -> None:
    with connection(url, autocommit=True) as conn:
        publish(conn, model="toy", version=version, run_ids=[run_id])


def _gc(url: str, **options: Any):  # type: ignore[no-untyped-def]
    values: dict[str, Any] = {"keep_versions": 1, "keep_days": 0.0, "model": "toy"}
    values.update(options)
    with connection(url, autocommit=True) as conn:
        return collect_garbage(conn, **values)


def _visible_runs(url: str) -> set[int | None]:
    with connection(url) as conn:
        return {p.run_id for p in lookup(conn, "toy", KEYS)}


def _runs(url: str) -> set[int]:
    with connection(url) as conn:
        return {int(r[0]) for r in conn.execute("SELECT run_id FROM runs")}


def _plan_nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    nodes = [plan]
    for child in plan.get("Plans", []):
        nodes += _plan_nodes(child)
    return nodes


@pytest.fixture()
def toy(tmp_path: Path, toy_model_builder) -> Path:  # type: ignore[no-untyped-def]
    for version, weights in {"1": (0.5, 0.25), "2": (-0.5, 0.75), "3": (0.1, 0.1)}.items():
        toy_model_builder(tmp_path / "models", version=version, weights=weights)
    return tmp_path / "models"


@pytest.fixture()
def url(database_url: str) -> str:
    """The module's database, emptied of runs before each test (the schema stays)."""
    from pipelines.store.db import migrate

    migrate(database_url)
    with connection(database_url) as conn:
        for (version_id,) in conn.execute("SELECT version_id FROM model_versions").fetchall():
            conn.execute(f"DROP TABLE IF EXISTS predictions_v{int(version_id)}")
        conn.execute("TRUNCATE active_versions, runs, publishes, model_versions RESTART IDENTITY CASCADE")
    return database_url


@pytest.mark.slow
def test_lookup_is_an_index_scan_of_at_most_two_rows_per_key_after_100_published_reruns_and_gc(
    url: str, toy: Path
) -> None:
    run_ids = []
    for _ in range(RERUNS):
        run_ids.append(_run(url, toy, "1"))
        _publish(url, "1", run_ids[-1])
    result = _gc(url)
    assert sorted(r.run_id for r in result.runs) == run_ids[:-2]
    assert {r.reason for r in result.runs} == {"superseded"}
    assert result.predictions_deleted == (RERUNS - 2) * N_KEYS
    with connection(url) as conn:
        explained = conn.execute(
            "EXPLAIN (ANALYZE, FORMAT JSON) " + LOOKUP_SQL, ("toy", [KEYS[7]])
        ).fetchone()
        per_key = conn.execute("SELECT count(*) FROM predictions WHERE key = %s", (KEYS[7],)).fetchone()
    assert explained is not None
    plan = explained[0][0]["Plan"]
    scans = [n for n in _plan_nodes(plan) if str(n.get("Relation Name", "")).startswith("predictions")]
    assert scans and all(n["Node Type"] in ("Index Scan", "Index Only Scan") for n in scans)
    assert all(n["Actual Rows"] <= 2 for n in scans)  # current publish + the previous one
    assert plan["Actual Rows"] == 1 and per_key == (2,)
    assert _visible_runs(url) == {run_ids[-1]}


def test_gc_keeps_current_and_previous_publish_so_one_rollback_still_works(url: str, toy: Path) -> None:
    first, second = _run(url, toy, "1"), _run(url, toy, "1")
    _publish(url, "1", first)
    _publish(url, "1", second)
    newest_v2 = _run(url, toy, "2")
    _publish(url, "2", newest_v2)
    result = _gc(url)
    assert [r.run_id for r in result.runs] == [
        first
    ]  # superseded by `second`, older than the previous publish
    assert _visible_runs(url) == {newest_v2}
    with connection(url, autocommit=True) as conn:
        rollback(conn, model="toy")
    assert _visible_runs(url) == {second}


def _served(conn: psycopg.Connection) -> dict[str, tuple[str, int, float]]:
    rows = conn.execute("SELECT key, version, run_id, score FROM predictions_current WHERE model = 'toy'")
    return {key: (version, run_id, score) for key, version, run_id, score in rows}


def _served_now_and_after_one_rollback(url: str) -> tuple[dict, dict]:  # type: ignore[type-arg]
    with connection(url) as conn:
        now = _served(conn)
        rollback(conn, model="toy")  # inside this uncommitted transaction only
        after = _served(conn)
        conn.rollback()
    return now, after


@pytest.mark.parametrize(
    ("keep_versions", "reasons"),
    [(1, {"dropped version"}), (2, {"superseded", "unpublished"})],
)
def test_gc_never_changes_what_is_served_or_what_one_rollback_would_serve(
    url: str, toy: Path, keep_versions: int, reasons: set[str]
) -> None:
    first_half, second_half, middle = slice(0, 1000), slice(1000, None), slice(500, 1500)
    for version, keys in [("1", first_half), ("1", second_half), ("1", middle), ("1", first_half)]:
        _publish(url, version, _run(url, toy, version, keys=keys))
    _run(url, toy, "1", fail=True, keys=middle)
    for keys in (second_half, middle):
        _publish(url, "2", _run(url, toy, "2", keys=keys))
    _publish(url, "2", _run(url, toy, "2", keys=first_half))
    before = _served_now_and_after_one_rollback(url)
    result = _gc(url, keep_versions=keep_versions)
    assert {r.reason for r in result.runs} == reasons
    assert _served_now_and_after_one_rollback(url) == before
    assert len(before[0]) == N_KEYS and {v for v, _, _ in before[0].values()} == {"2"}


def test_gc_deletes_failed_rolled_back_and_unpublished_runs_but_keeps_a_live_one(url: str, toy: Path) -> None:
    published = _run(url, toy, "1")
    _publish(url, "1", published)
    failed = _run(url, toy, "1", fail=True)
    never_published = _run(url, toy, "1")
    rolled_back = _run(url, toy, "1")
    _publish(url, "1", rolled_back)
    with connection(url, autocommit=True) as conn:
        rollback(conn, model="toy")
        live = _run(url, toy, "1", verify=False)  # scoring, shard written just now
    result = _gc(url)
    assert {r.run_id: r.reason for r in result.runs} == {
        failed: "unpublished",
        never_published: "unpublished",
        rolled_back: "unpublished",
    }
    assert _runs(url) == {published, live}
    assert _visible_runs(url) == {published}
    with connection(url) as conn:
        left = conn.execute("SELECT DISTINCT run_id FROM predictions_v1 ORDER BY 1").fetchall()
        shard_rows = conn.execute("SELECT count(*) FROM run_shards WHERE run_id = %s", (failed,)).fetchone()
    assert [r[0] for r in left] == sorted({published, live}) and shard_rows == (0,)


def test_gc_keeps_every_run_younger_than_the_rollback_window(url: str, toy: Path) -> None:
    runs = [_run(url, toy, "1") for _ in range(3)]
    for run_id in runs:
        _publish(url, "1", run_id)
    failed = _run(url, toy, "1", fail=True)
    assert _gc(url, keep_days=7).runs == []
    assert _runs(url) == {*runs, failed}


def test_gc_drops_inactive_version_partitions_outside_the_window_but_not_the_rollback_target(
    url: str, toy: Path
) -> None:
    for version in ("1", "2"):
        _publish(url, version, _run(url, toy, version))
    assert _gc(url).dropped_versions == []  # v1 is what one rollback of v2 shows
    _publish(url, "3", _run(url, toy, "3"))
    result = _gc(url)
    assert result.dropped_versions == [("toy", "1")]
    with connection(url) as conn:
        gone = conn.execute("SELECT to_regclass('predictions_v1') IS NULL").fetchone()
        left = conn.execute("SELECT DISTINCT version FROM runs ORDER BY 1").fetchall()
    assert gone == (True,) and [r[0] for r in left] == ["2", "3"]
    with connection(url, autocommit=True) as conn:
        rollback(conn, model="toy")
    assert len(_visible_runs(url)) == 1 and None not in _visible_runs(url)


def test_gc_dry_run_reports_and_deletes_nothing(url: str, toy: Path) -> None:
    _run(url, toy, "1", fail=True)
    before = _runs(url)
    result = _gc(url, dry_run=True)
    assert len(result.runs) == 1 and result.summary().startswith("gc would delete 1 run(s) (1 unpublished)")
    assert _runs(url) == before


def test_gc_cli_uses_settings_defaults_and_prints_json(
    url: str, toy: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    failed = _run(url, toy, "1", fail=True)
    monkeypatch.setenv("PREDCACHE_DATABASE_URL", url)
    monkeypatch.setenv("PREDCACHE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PREDCACHE_GC_KEEP_DAYS", "0")
    assert main(["gc", "--model", "toy", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["run_id"] for r in out["runs"]] == [failed] and out["dry_run"] is False
