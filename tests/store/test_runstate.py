"""The run state machine: every move names its allowed previous states; a scoring run holds a lease."""

from __future__ import annotations

import itertools
import threading
from pathlib import Path

import pyarrow as pa
import pytest

from pipelines.core.keys import key_hash
from pipelines.core.model import load_model
from pipelines.core.shards import plan_shards
from pipelines.errors import RunStateError
from pipelines.store import ledger, runstate
from pipelines.store.db import connection

STATES = ("planned", "scoring", "failed", "verified", "published", "rolled_back", "abandoned")


@pytest.fixture()
def run_id(migrated_url: str, toy_models_dir: Path) -> int:
    model = load_model(toy_models_dir, "toy")
    keys = pa.array([f"k{i}" for i in range(20)])
    with connection(migrated_url, autocommit=True) as conn, conn.transaction():
        version_id = ledger.register_version(conn, model)
        return ledger.create_run(
            conn,
            version_id=version_id,
            model=model,
            engine="test",
            input_uri=f"/in/{id(keys)}",
            fingerprint="f",
            shard_rows=100,
            shards=plan_shards(key_hash(keys), 100),
        )


def _force(url: str, run_id: int, status: str) -> None:
    with connection(url, autocommit=True) as conn:
        conn.execute("UPDATE runs SET status = %s WHERE run_id = %s", (status, run_id))


def _status(url: str, run_id: int) -> str:
    with connection(url) as conn:
        return ledger.get_run(conn, run_id).status


@pytest.mark.parametrize(("before", "after"), list(itertools.product(STATES, STATES)))
def test_a_move_succeeds_exactly_when_its_edge_is_in_the_table(
    migrated_url: str, run_id: int, before: str, after: str
) -> None:
    _force(migrated_url, run_id, before)
    allowed = before in runstate.EDGES.get(after, ())
    with connection(migrated_url, autocommit=True) as conn:
        if allowed:
            runstate.move(conn, run_id, after, detail="test")
        else:
            with pytest.raises(RunStateError, match=f"run {run_id} is {before}; it cannot become {after}"):
                runstate.move(conn, run_id, after, detail="test")
    assert _status(migrated_url, run_id) == (after if allowed else before)


def test_the_edge_table_has_the_documented_states_and_never_leaves_published_except_by_rollback() -> None:
    assert set(runstate.EDGES) | {"planned"} == set(STATES)
    leaving_published = {to for to, sources in runstate.EDGES.items() if "published" in sources}
    assert leaving_published == {"rolled_back"}


def test_a_late_attempt_on_a_published_run_is_refused_and_leaves_it_published(
    migrated_url: str, run_id: int
) -> None:
    _force(migrated_url, run_id, "published")
    with connection(migrated_url, autocommit=True) as conn:
        with pytest.raises(RunStateError, match="cannot become scoring"):
            ledger.start_attempt(conn, run_id, "beam", owner="late-twin")
        with pytest.raises(RunStateError, match="cannot become failed"):
            ledger.mark_failed(conn, run_id, "a failing twin")
    assert _status(migrated_url, run_id) == "published"


def test_an_abandoned_run_cannot_be_verified(migrated_url: str, run_id: int) -> None:
    _force(migrated_url, run_id, "abandoned")
    with connection(migrated_url, autocommit=True) as conn, pytest.raises(RunStateError, match="abandoned"):
        ledger.verify_run(conn, run_id, max_reject_fraction=1.0)
    assert _status(migrated_url, run_id) == "abandoned"


def test_a_live_lease_refuses_a_second_scorer(migrated_url: str, run_id: int) -> None:
    with connection(migrated_url, autocommit=True) as conn:
        ledger.start_attempt(conn, run_id, "beam", owner="host-a:1:x", lease_seconds=60)
        with pytest.raises(RunStateError, match=r"being scored by host-a:1:x .*lease"):
            ledger.start_attempt(conn, run_id, "beam", owner="host-b:2:y", lease_seconds=60)
        assert ledger.get_run(conn, run_id).owner == "host-a:1:x"
        assert not ledger.get_run(conn, run_id).stale


def test_an_expired_lease_is_listed_stale_and_resumable(migrated_url: str, run_id: int) -> None:
    with connection(migrated_url, autocommit=True) as conn:
        first = ledger.start_attempt(conn, run_id, "beam", owner="host-a:1:x", lease_seconds=60)
        conn.execute("UPDATE runs SET lease_expires_at = now() - interval '1 s' WHERE run_id = %s", (run_id,))
        assert [r.stale for r in ledger.list_runs(conn) if r.run_id == run_id] == [True]
        second = ledger.start_attempt(conn, run_id, "beam", owner="host-b:2:y", lease_seconds=60)
        run = ledger.get_run(conn, run_id)
        events = runstate.events(conn, run_id)
    assert (second, run.owner, run.stale) == (first + 1, "host-b:2:y", False)
    assert events[-1].startswith("scoring -> scoring by host-b:2:y: took over from host-a:1:x")


def test_a_lease_of_a_dead_process_on_this_host_is_taken_over_at_once(migrated_url: str, run_id: int) -> None:
    dead = runstate.owner_id().split(":")[0] + ":999999999:dead"
    with connection(migrated_url, autocommit=True) as conn:
        ledger.start_attempt(conn, run_id, "beam", owner=dead, lease_seconds=600)
        ledger.start_attempt(conn, run_id, "beam", owner="me", lease_seconds=60)
        assert ledger.get_run(conn, run_id).owner == "me"


def test_concurrent_claims_of_one_run_give_it_to_exactly_one_process(migrated_url: str, run_id: int) -> None:
    outcomes: list[str] = []
    barrier = threading.Barrier(4)

    def claim(i: int) -> None:
        with connection(migrated_url, autocommit=True) as conn:
            barrier.wait()
            try:
                ledger.start_attempt(conn, run_id, "beam", owner=f"h:{i}:o", lease_seconds=60)
                outcomes.append("won")
            except RunStateError:
                outcomes.append("refused")

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["refused", "refused", "refused", "won"]


def test_every_move_is_recorded_in_the_run_events(migrated_url: str, run_id: int) -> None:
    with connection(migrated_url, autocommit=True) as conn:
        ledger.start_attempt(conn, run_id, "beam", owner="o1", lease_seconds=60)
        ledger.mark_failed(conn, run_id, "boom", owner="o1")
        events = runstate.events(conn, run_id)
    assert events == ["planned -> scoring by o1: attempt 1", "scoring -> failed by o1: boom"]
