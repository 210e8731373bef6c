"""Run orchestration under bad input: null and empty keys are rejected before planning."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.jobs import RunRequest, plan_run, run_job
from pipelines.store import ledger
from pipelines.store.db import connection


def _input(folder: Path) -> Path:
    folder.mkdir()
    keys: list[str | None] = [None] * 300 + [""] * 200 + [f"g{i}" for i in range(100)]
    n = len(keys)
    pq.write_table(pa.table({"id": keys, "x": [0.5] * n, "n": [1] * n}), folder / "p.parquet")
    return folder


def test_null_and_empty_keys_are_rejected_before_planning_and_form_no_shard(
    database_url: str, settings_for, toy_models_dir: Path, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for(database_url, models_dir=toy_models_dir, max_reject_fraction=1.0, workers=1)
    folder = _input(tmp_path / "in")
    run_id = plan_run(settings, RunRequest(model="toy", input=folder, shard_rows=20)).run_id
    with connection(database_url) as conn:
        shards = ledger.planned_shards(conn, run_id, pending_only=False)
        reasons = dict(
            conn.execute(
                "SELECT reason, count(*) FROM rejects WHERE run_id = %s GROUP BY 1", (run_id,)
            ).fetchall()
        )
    assert max(s.rows for s in shards) <= 20 and sum(s.rows for s in shards) == 100
    assert reasons == {"key is null": 300, "key is empty": 200}
    summary = run_job(settings, RunRequest(model="toy", input=folder, shard_rows=20))
    assert (summary.run_id, summary.status) == (run_id, "verified")
    assert (summary.rows_in, summary.rows_out, summary.rows_rejected) == (600, 100, 500)


def test_a_run_is_not_resumed_with_a_model_rebuilt_in_place(
    database_url: str, settings_for, tmp_path: Path, toy_model_builder
) -> None:  # type: ignore[no-untyped-def]
    import pytest

    from pipelines.errors import ModelCardError
    from pipelines.jobs import score_run

    models = tmp_path / "models"
    toy_model_builder(models, name="rebuilt", weights=(0.5, 0.25))
    settings = settings_for(database_url, models_dir=models)
    folder = tmp_path / "in2"
    folder.mkdir()
    pq.write_table(pa.table({"id": ["a", "b"], "x": [0.1, 0.2], "n": [1, 2]}), folder / "p.parquet")
    run_id = plan_run(settings, RunRequest(model="rebuilt", input=folder)).run_id
    toy_model_builder(models, name="rebuilt", weights=(0.9, 0.1))
    with pytest.raises(ModelCardError, match="versions are immutable"):
        score_run(settings, run_id)
    with connection(database_url) as conn:
        assert ledger.get_run(conn, run_id).status == "planned"
