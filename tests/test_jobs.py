"""jobs.py: the step sequence plan -> score -> verify -> publish, resumable and idempotent."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.errors import ConfigError, InputError
from pipelines.jobs import RunRequest, plan_run, run_job, score_run
from pipelines.settings import Settings
from pipelines.store import ledger
from pipelines.store.db import connection

ROWS = 300


def _input(folder: Path, rows: int = ROWS) -> Path:
    folder.mkdir(parents=True)
    table = pa.table(
        {"id": [f"j{i}" for i in range(rows)], "x": [i / 10 for i in range(rows)], "n": [1] * rows}
    )
    pq.write_table(table, folder / "part-0.parquet")
    return folder


@pytest.fixture()
def settings(migrated_url: str, settings_for: Callable[..., Settings], toy_models_dir: Path) -> Settings:
    return settings_for(migrated_url, models_dir=toy_models_dir, workers=1)


def _run_count(url: str) -> int:
    with connection(url) as conn:
        [(count,)] = conn.execute("SELECT count(*) FROM runs").fetchall()
    return int(count)


def test_a_run_is_planned_scored_verified_and_published(settings: Settings, tmp_path: Path) -> None:
    seen: list[tuple[int, int, int, int]] = []
    summary = run_job(
        settings,
        RunRequest(model="toy", input=_input(tmp_path / "in"), shard_rows=100, publish=True),
        on_progress=lambda *counts: seen.append(counts),
    )
    assert (summary.status, summary.rows_in, summary.rows_out) == ("published", ROWS, ROWS)
    assert summary.shards_scored == summary.shards_total >= 3
    assert seen[-1] == (summary.shards_total, summary.shards_total, ROWS, ROWS)


def test_planning_the_same_unfinished_input_again_resumes_its_run(settings: Settings, tmp_path: Path) -> None:
    request = RunRequest(model="toy", input=_input(tmp_path / "in"), shard_rows=100)
    first = plan_run(settings, request)
    again = plan_run(settings, request)
    assert (again.run_id, again.resumed, first.resumed) == (first.run_id, True, False)


def test_a_finished_input_is_skipped_unless_rerun_is_asked(settings: Settings, tmp_path: Path) -> None:
    request = RunRequest(model="toy", input=_input(tmp_path / "in"), shard_rows=1_000)
    first = run_job(settings, request)
    skipped = plan_run(settings, request)
    rerun = plan_run(settings, RunRequest(model="toy", input=request.input, shard_rows=1_000, rerun=True))
    assert skipped.finished and skipped.run_id == first.run_id
    assert not rerun.finished and rerun.run_id != first.run_id


def test_an_input_changed_after_planning_fails_the_run(settings: Settings, tmp_path: Path) -> None:
    source = _input(tmp_path / "in")
    planned = plan_run(settings, RunRequest(model="toy", input=source, shard_rows=1_000))
    pq.write_table(pa.table({"id": ["new"], "x": [1.0], "n": [1]}), source / "part-1.parquet")
    with pytest.raises(InputError, match=r"changed after it was planned; start a new run"):
        score_run(settings, planned.run_id)
    with connection(settings.database_url or "") as conn:
        assert ledger.get_run(conn, planned.run_id).status == "failed"


def test_an_unknown_engine_is_refused_before_any_run_is_recorded(settings: Settings, tmp_path: Path) -> None:
    assert settings.database_url is not None
    before = _run_count(settings.database_url)
    with pytest.raises(ConfigError, match="unknown engine 'flink'; choose one of"):
        run_job(settings, RunRequest(model="toy", input=_input(tmp_path / "in"), engine="flink"))
    assert _run_count(settings.database_url) == before


def test_the_default_shard_size_grows_past_max_shards_and_an_explicit_one_is_kept(
    migrated_url, settings_for, toy_models_dir, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipelines.jobs import RunRequest, plan_run
    from pipelines.store import ledger
    from pipelines.store.db import connection

    folder = tmp_path / "in"
    folder.mkdir()
    n = 100_000
    table = pa.table(
        {"id": [f"k{i}" for i in range(n)], "x": [i / n for i in range(n)], "n": [i % 3 for i in range(n)]}
    )
    pq.write_table(table, folder / "part-0.parquet")
    auto = settings_for(migrated_url, models_dir=toy_models_dir).model_copy(update={"max_shards": 4})
    planned = plan_run(auto, RunRequest(model="toy", input=folder, rerun=True))
    with connection(migrated_url) as conn:
        run = ledger.get_run(conn, planned.run_id)
        shards = ledger.planned_shards(conn, planned.run_id, pending_only=False)
    assert run.shard_rows == 31_250 and len(shards) <= 4 and sum(s.rows for s in shards) == n
    explicit = plan_run(auto, RunRequest(model="toy", input=folder, shard_rows=10_000, rerun=True))
    with connection(migrated_url) as conn:
        assert ledger.get_run(conn, explicit.run_id).shard_rows == 10_000
        assert len(ledger.planned_shards(conn, explicit.run_id, pending_only=False)) > 4
