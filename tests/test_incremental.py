"""Incremental refresh end to end on a real Beam run and PostgreSQL.

Snapshot A is scored in full and published. Snapshot B changes a few rows, adds keys and
drops one; an incremental run scores only the changed and new rows, and the cache then
equals a full rescoring of B key for key (in a second database).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.jobs import RunRequest, run_job
from pipelines.store.db import connection

N = 240


def _snapshot(folder: Path, table: pa.Table) -> Path:
    folder.mkdir(parents=True)
    pq.write_table(table, folder / "part-0.parquet")
    return folder


def _a() -> pa.Table:
    return pa.table(
        {
            "id": [f"k{i:04d}" for i in range(N)],
            "x": [i / 40 - 3 for i in range(N)],
            "n": [i % 4 for i in range(N)],
        }
    )


def _b() -> pa.Table:
    """A with rows 3, 50 and 77 changed, row 9 dropped, and keys k9000/k9001 added."""
    rows = _a().to_pylist()
    rows[3]["x"] += 1.0
    rows[50]["n"] = 9
    rows[77]["x"] = -rows[77]["x"]
    del rows[9]
    rows += [{"id": "k9000", "x": 0.5, "n": 1}, {"id": "k9001", "x": None, "n": 2}]
    return pa.Table.from_pylist(rows, schema=_a().schema)


def _current(url: str) -> dict[str, tuple[float, int, int]]:
    with connection(url) as conn:
        return {
            key: (score, label, fp)
            for key, score, label, fp in conn.execute(
                "SELECT key, score::float8, label, input_fp FROM predictions_current WHERE model = 'toy'"
            )
        }


def test_incremental_scores_only_changed_and_new_rows_and_equals_a_full_rescoring(
    migrated_url, other_database, settings_for, toy_models_dir, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for(migrated_url, models_dir=toy_models_dir)
    a = _snapshot(tmp_path / "a", _a())
    b = _snapshot(tmp_path / "b", _b())
    run_job(settings, RunRequest(model="toy", input=a, shard_rows=60, publish=True))
    summary = run_job(
        settings, RunRequest(model="toy", input=b, shard_rows=60, publish=True, incremental=True)
    )
    # 3 changed + k9000 scored, k9001 rejected (null x), the other 236 unchanged.
    assert (summary.rows_in, summary.rows_out, summary.rows_rejected, summary.rows_unchanged) == (
        241,
        4,
        1,
        236,
    )
    full = settings_for(other_database, models_dir=toy_models_dir)
    run_job(full, RunRequest(model="toy", input=b, shard_rows=60, publish=True))
    incremental, rescored = _current(migrated_url), _current(other_database)
    assert {k: v for k, v in incremental.items() if k != "k0009"} == rescored
    assert "k0009" in incremental  # absent from B, kept without --prune-missing


def test_prune_missing_hides_absent_keys_from_its_publish_on(
    migrated_url, settings_for, toy_models_dir, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    with connection(migrated_url) as conn:
        conn.execute("DELETE FROM active_versions")  # this module's earlier test published toy
    settings = settings_for(migrated_url, models_dir=toy_models_dir)
    a = _snapshot(tmp_path / "a", _a())
    b = _snapshot(tmp_path / "b", _b())
    run_job(settings, RunRequest(model="toy", input=a, shard_rows=60, publish=True, rerun=True))
    pruning = run_job(settings, RunRequest(model="toy", input=b, incremental=True, prune_missing=True))
    assert pruning.rows_pruned == 1 and not pruning.published
    assert "k0009" in _current(migrated_url)  # not published yet: readers still see it
    run_job(settings, RunRequest(model="toy", input=b, incremental=True, prune_missing=True, publish=True))
    current = _current(migrated_url)
    assert "k0009" not in current and "k0010" in current
    with connection(migrated_url) as conn:
        plan = conn.execute(
            "EXPLAIN SELECT * FROM predictions_current WHERE model = 'toy' AND key = 'k0010'"
        ).fetchall()
    assert "Index" in " ".join(line for (line,) in plan)


def test_a_new_model_version_rescores_every_row(
    migrated_url, settings_for, toy_models_dir, toy_model_builder, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    toy_model_builder(toy_models_dir, version="2", weights=(1.0, -1.0))
    settings = settings_for(migrated_url, models_dir=toy_models_dir)
    a = _snapshot(tmp_path / "a", _a())
    run_job(settings, RunRequest(model="toy", version="1", input=a, publish=True, rerun=True))
    summary = run_job(settings, RunRequest(model="toy", version="2", input=a, incremental=True, publish=True))
    assert (summary.rows_out, summary.rows_unchanged) == (N, 0)
    again = run_job(settings, RunRequest(model="toy", version="2", input=a, incremental=True, rerun=True))
    assert (again.rows_out, again.rows_unchanged) == (0, N)


def test_an_incremental_run_over_a_changed_schema_is_refused_in_one_line(
    migrated_url, settings_for, toy_models_dir, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for(migrated_url, models_dir=toy_models_dir)
    run_job(
        settings, RunRequest(model="toy", version="1", input=_snapshot(tmp_path / "a", _a()), publish=True)
    )
    ints = _a().set_column(1, "x", pa.array(range(N), pa.int64()))
    changed = _snapshot(tmp_path / "ints", ints)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREDCACHE_")}
    env.update(
        PREDCACHE_DATABASE_URL=migrated_url,
        PREDCACHE_HOME=str(tmp_path / "home"),
        PREDCACHE_MODELS_DIR=str(toy_models_dir),
    )
    command = [sys.executable, "-m", "pipelines.cli", "run", "--model", "toy", "--version", "1"]
    result = subprocess.run(
        [*command, "--input", str(changed), "--incremental"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
    assert (
        "schema changed" in lines[0]
        and "(x: double -> int64)" in lines[0]
        and "without --incremental" in lines[0]
    )
    full = subprocess.run(
        [*command, "--input", str(changed)], env=env, capture_output=True, text=True, timeout=300
    )
    assert full.returncode == 0, full.stderr[-2000:]


def test_an_incremental_run_whose_basis_was_overtaken_is_not_published(
    migrated_url, settings_for, toy_models_dir, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    """Its unchanged rows rely on the basis being current: a run published since may have replaced them."""
    from pipelines.errors import RunStateError
    from pipelines.jobs import publish_run

    with connection(migrated_url) as conn:
        conn.execute("DELETE FROM active_versions")  # this module's earlier tests published toy
    settings = settings_for(migrated_url, models_dir=toy_models_dir)
    a = _snapshot(tmp_path / "a", _a())
    b = _snapshot(tmp_path / "b", _b())
    run_job(settings, RunRequest(model="toy", input=a, publish=True, rerun=True))
    first = run_job(settings, RunRequest(model="toy", input=b, incremental=True, rerun=True))
    changed = _b().set_column(2, "n", pa.array([7] * 241, pa.int64()))
    second = run_job(
        settings,
        RunRequest(model="toy", input=_snapshot(tmp_path / "c", changed), incremental=True, publish=True),
    )
    assert second.published and second.rows_out == 240  # every valid row changed (k9001 rejected)
    with pytest.raises(RunStateError) as refused:
        publish_run(settings, first.run_id)
    message = str(refused.value)
    assert "\n" not in message and f"run {second.run_id} is the newest published run" in message
    assert "start a new incremental run" in message


def test_a_resumed_incremental_run_makes_its_lost_rows_to_score_again(
    migrated_url, settings_for, toy_models_dir, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    from pipelines.jobs import plan_run, score_run, verify_run
    from pipelines.refresh import run_file

    with connection(migrated_url) as conn:
        conn.execute("DELETE FROM active_versions")
    settings = settings_for(migrated_url, models_dir=toy_models_dir)
    a = _snapshot(tmp_path / "a", _a())
    b = _snapshot(tmp_path / "b", _b())
    run_job(settings, RunRequest(model="toy", input=a, publish=True, rerun=True))
    planned = plan_run(settings, RunRequest(model="toy", input=b, incremental=True, rerun=True))
    forwarded = run_file(settings, planned.run_id)
    assert pq.read_table(forwarded).num_rows == 5  # 3 changed, k9000 new, k9001 invalid
    forwarded.unlink()  # e.g. the process died and its home folder was cleaned
    score_run(settings, planned.run_id)
    run = verify_run(settings, planned.run_id)
    assert (run.rows_in, run.rows_out, run.rows_rejected, run.rows_unchanged) == (241, 4, 1, 236)
    assert not forwarded.exists()  # removed once verified


def test_a_finished_input_is_found_before_the_comparison_and_without_starting_an_engine(
    migrated_url, settings_for, toy_models_dir, tmp_path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    from pipelines import jobs, refresh

    settings = settings_for(migrated_url, models_dir=toy_models_dir)
    a = _snapshot(tmp_path / "a", _a())
    b = _snapshot(tmp_path / "b", _b())
    run_job(settings, RunRequest(model="toy", input=a, shard_rows=60, publish=True))
    request = RunRequest(model="toy", input=b, shard_rows=60, publish=True, incremental=True)
    first = run_job(settings, request)
    compared: list[Path] = []
    started: list[str] = []
    real_plan = refresh.plan_refresh

    def plan_refresh(*args, **kwargs):  # type: ignore[no-untyped-def]
        compared.append(args[3])
        return real_plan(*args, **kwargs)

    monkeypatch.setattr(refresh, "plan_refresh", plan_refresh)
    monkeypatch.setattr(jobs, "_start_engine_early", lambda settings, request: started.append(request.engine))
    again = run_job(settings, request)
    assert again.skipped and again.run_id == first.run_id
    assert compared == [] and started == []
    # A new snapshot still compares and starts its engine, once.
    c = _snapshot(tmp_path / "c", _a())
    run_job(settings, RunRequest(model="toy", input=c, shard_rows=60, publish=True, incremental=True))
    assert len(compared) == 1 and started == ["beam"]


def test_carried_pairs_are_stored_while_scoring_and_made_again_when_an_attempt_lost_them(
    migrated_url, other_database, settings_for, toy_models_dir, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    from pipelines.errors import RunStateError
    from pipelines.jobs import plan_run, publish_run, score_run, verify_run
    from pipelines.store import ledger

    settings = settings_for(migrated_url, models_dir=toy_models_dir)
    a = _snapshot(tmp_path / "a", _a())
    b = _snapshot(tmp_path / "b", _b())
    run_job(settings, RunRequest(model="toy", input=a, shard_rows=60, publish=True, rerun=True))
    planned = plan_run(settings, RunRequest(model="toy", input=b, shard_rows=60, incremental=True))
    assert planned.carried is not None and len(planned.carried) == 237  # 236 unchanged + absent k0009
    with connection(migrated_url) as conn:
        run = ledger.get_run(conn, planned.run_id)
        assert run.pairs_carried_plan == 237 and ledger.carried_pairs_stored(conn, planned.run_id) == 0
    # This process "died" after planning: the next attempt has no pairs in memory and makes them again.
    score_run(settings, planned.run_id)
    with connection(migrated_url) as conn:
        assert ledger.carried_pairs_stored(conn, planned.run_id) == 237
        conn.execute(
            "DELETE FROM run_fingerprints WHERE run_id = %s AND part LIKE 'carried-%%'", (planned.run_id,)
        )
    with pytest.raises(RunStateError, match="0 of 237 carried-over pairs stored"):
        verify_run(settings, planned.run_id)
    score_run(settings, planned.run_id)  # a rerun resumes: nothing left to score but the pairs
    verify_run(settings, planned.run_id)
    publish_run(settings, planned.run_id)
    full = settings_for(other_database, models_dir=toy_models_dir)
    run_job(full, RunRequest(model="toy", input=b, shard_rows=60, publish=True, rerun=True))
    incremental, rescored = _current(migrated_url), _current(other_database)
    assert {k: v for k, v in incremental.items() if k != "k0009"} == rescored
    # The next incremental run compares with this one: every row of B is unchanged.
    again = run_job(settings, RunRequest(model="toy", input=b, shard_rows=60, incremental=True, rerun=True))
    assert (again.rows_out, again.rows_unchanged) == (0, 240)
