"""Acceptance of the Beam engine on the real reference model and the real July flights."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from pipelines.core.model import load_model, to_feed
from pipelines.core.validate import validate
from pipelines.errors import EngineError
from pipelines.jobs import RunRequest, plan_run, run_job
from pipelines.settings import DEFAULT_MODELS_DIR
from pipelines.store import ledger
from pipelines.store.db import connection

pytestmark = pytest.mark.slow
MODEL = "flights_delay"


def _input_table(folder: Path) -> pa.Table:
    return ds.dataset(folder, format="parquet", partitioning="hive").to_table()


def _scores(url: str, run_id: int) -> dict[str, np.float32]:
    with connection(url) as conn:
        rows = conn.execute(
            "SELECT key, score::float8 FROM predictions WHERE run_id = %s", (run_id,)
        ).fetchall()
    return {key: np.float32(score) for key, score in rows}


def _direct_onnxruntime_scores(table: pa.Table) -> dict[str, np.float32]:
    """The reference: onnxruntime on the int8 file, all valid rows in one call, no predcache scoring code."""
    model = load_model(DEFAULT_MODELS_DIR, MODEL)
    good = validate(table, model.card).good
    session = ort.InferenceSession(
        str(model.version_dir / "model.int8.onnx"), providers=["CPUExecutionProvider"]
    )
    (score,) = session.run(["score"], to_feed(model.card, good))
    return dict(zip(good[model.card.key].to_pylist(), np.asarray(score).reshape(-1), strict=True))


def test_every_input_row_is_stored_once_as_prediction_or_reject(
    database_url, settings_for, flights_dir
) -> None:
    day = flights_dir / "date=2013-07-02"  # 42 of its flights lack weather: real rejects
    summary = run_job(settings_for(database_url), RunRequest(model=MODEL, input=day, shard_rows=200))
    keys = _input_table(day)["flight_id"].to_pylist()
    with connection(database_url) as conn:
        predicted = [
            r[0] for r in conn.execute("SELECT key FROM predictions WHERE run_id = %s", (summary.run_id,))
        ]
        rejected = [
            r[0] for r in conn.execute("SELECT key FROM rejects WHERE run_id = %s", (summary.run_id,))
        ]
    assert summary.rows_in == len(keys) == summary.rows_out + summary.rows_rejected
    assert sorted(predicted + rejected) == sorted(keys)
    assert summary.shards_total > 1 and summary.rows_rejected > 0


def test_cached_scores_equal_direct_int8_onnxruntime_bit_for_bit_for_any_shard_and_batch_size(
    database_url, settings_for, flights_dir
) -> None:
    day = flights_dir / "date=2013-07-04"
    small = run_job(
        settings_for(database_url, batch_rows=7), RunRequest(model=MODEL, input=day, shard_rows=150)
    )
    large = run_job(  # multi-process this time (small runs run in-process by default)
        settings_for(database_url, batch_rows=4096),
        RunRequest(
            model=MODEL,
            input=day,
            shard_rows=5000,
            rerun=True,
            engine_options={"in_process_max_rows": 0},
        ),
    )
    assert small.run_id != large.run_id and small.shards_total > large.shards_total
    expected = _direct_onnxruntime_scores(_input_table(day))
    assert _scores(database_url, small.run_id) == expected
    assert _scores(database_url, large.run_id) == expected


def test_a_run_failing_midway_resumes_only_pending_shards_with_no_duplicate_or_gap(
    database_url, settings_for, flights_dir
) -> None:
    settings = settings_for(database_url)
    day = flights_dir / "date=2013-07-03"
    request = RunRequest(model=MODEL, input=day, shard_rows=100)
    # A new run even if another test of this module finished this day already.
    run_id = plan_run(settings, RunRequest(model=MODEL, input=day, shard_rows=100, rerun=True)).run_id
    with connection(database_url) as conn:
        shard_ids = [s.shard_id for s in ledger.planned_shards(conn, run_id, pending_only=False)]
    with pytest.raises(EngineError, match="injected fault"):
        run_job(
            settings,
            RunRequest(model=MODEL, input=day, shard_rows=100, fail_shards=frozenset(shard_ids[-2:])),
        )
    with connection(database_url) as conn:
        done_before = {s for s in shard_ids} - {
            s.shard_id for s in ledger.planned_shards(conn, run_id, pending_only=True)
        }
        assert ledger.get_run(conn, run_id).status == "failed"
    resumed = run_job(settings, request)
    assert resumed.run_id == run_id and resumed.resumed
    assert resumed.shards_scored == len(shard_ids) - len(done_before) >= 2
    with connection(database_url) as conn:
        attempts = dict(
            conn.execute("SELECT shard_id, attempt FROM run_shards WHERE run_id = %s", (run_id,)).fetchall()
        )
        [(total, distinct)] = conn.execute(
            "SELECT count(*), count(DISTINCT key) FROM predictions WHERE run_id = %s", (run_id,)
        ).fetchall()
    assert all(attempts[s] == 1 for s in done_before) and all(attempts[s] == 2 for s in shard_ids[-2:])
    assert total == distinct == resumed.rows_out
    assert resumed.rows_out + resumed.rows_rejected == _input_table(day).num_rows


def test_a_finished_input_is_not_scored_twice(database_url, settings_for, flights_dir) -> None:
    settings = settings_for(database_url)
    request = RunRequest(model=MODEL, input=flights_dir / "date=2013-07-06", shard_rows=500)
    first = run_job(settings, request)
    again = run_job(settings, request)
    assert not first.skipped and first.shards_scored > 0
    assert again.skipped and again.shards_scored == 0 and again.run_id == first.run_id


def _pieces(root: Path) -> list[Path]:
    return sorted(root.rglob("*.arrow")) if root.exists() else []


def test_a_runs_scratch_pieces_are_gone_once_its_shards_are_stored(
    database_url, settings_for, flights_dir
) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for(database_url)
    day = flights_dir / "date=2013-07-05"
    summary = run_job(settings, RunRequest(model=MODEL, input=day, shard_rows=100))
    assert summary.shards_total >= 8 and summary.rows_out + summary.rows_rejected == summary.rows_in
    assert _pieces(Path(settings.scratch)) == []
    assert not (Path(settings.scratch) / f"run-{summary.run_id}").exists()


def test_a_killed_attempts_scratch_is_cleaned_when_the_run_resumes(
    database_url, settings_for, flights_dir, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for(database_url)
    day = shutil.copytree(flights_dir / "date=2013-07-06", tmp_path / "day")  # an input no other test ran
    request = RunRequest(model=MODEL, input=day, shard_rows=100)
    run_id = plan_run(settings, request).run_id
    with connection(database_url) as conn:
        shard_ids = [s.shard_id for s in ledger.planned_shards(conn, run_id, pending_only=False)]
    failing = RunRequest(  # worker processes this time: their pieces outlive them the same way
        model=MODEL,
        input=day,
        shard_rows=100,
        fail_shards=frozenset(shard_ids[:1]),
        engine_options={"in_process_max_rows": 0, "direct_running_mode": "multi_processing"},
    )
    with pytest.raises(EngineError, match="injected fault"):
        run_job(settings, failing)
    left = _pieces(Path(settings.scratch) / f"run-{run_id}" / "attempt-1")
    assert left and {p.parent.name for p in left} >= {shard_ids[0]}
    resumed = run_job(settings, request)
    assert resumed.run_id == run_id and resumed.rows_out + resumed.rows_rejected == resumed.rows_in
    assert _pieces(Path(settings.scratch)) == []


def test_a_run_killed_with_sigkill_midway_resumes_to_every_row_once_and_leaves_no_scratch(
    database_url, flights_dir, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    day = shutil.copytree(flights_dir / "date=2013-07-07", tmp_path / "day")  # an input no other test ran
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREDCACHE_")}
    env.update(PREDCACHE_DATABASE_URL=database_url, PREDCACHE_HOME=str(home), PREDCACHE_SHARD_ROWS="20")
    command = [sys.executable, "-m", "pipelines.cli", "run", "--model", MODEL, "--input", str(day), "--json"]
    proc = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    done = total = 0
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        with connection(database_url) as conn:
            row = conn.execute(
                "SELECT count(*) FILTER (WHERE s.status = 'done'), count(*) FROM run_shards s "
                "JOIN runs r USING (run_id) WHERE r.input_uri = %s",
                (str(day.resolve()),),
            ).fetchone()
        done, total = (int(row[0]), int(row[1])) if row else (0, 0)
        if done >= 3:
            os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.communicate(timeout=60)
    assert 3 <= done < total, "the run finished before it could be killed midway"
    resumed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    summary = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert summary["resumed"] and summary["rows_in"] == _input_table(day).num_rows
    with connection(database_url) as conn:
        counted = conn.execute(
            "SELECT count(*), count(DISTINCT key) FROM predictions WHERE run_id = %s", (summary["run_id"],)
        ).fetchone()
    assert counted is not None
    total_rows, distinct = counted
    assert total_rows == distinct == summary["rows_out"]
    assert _pieces(home / "scratch") == []
