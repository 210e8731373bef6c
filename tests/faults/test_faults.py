"""Fault injection on the real database and engines: after every fault a rerun stores every key once.

Each case scores its own small input with the `predcache` CLI (Beam, 2 workers) with a fault
planned at a point (``pipelines.faults``), then injects it: kill -9 of the CLI (its whole
process group, workers included), kill -9 of one worker, or a PostgreSQL restart while a
worker waits at the point. Then the same command runs again, without faults, and must
finish; the run's rows are checked (every valid key exactly once) and its events read.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.store import ledger, runstate
from pipelines.store.db import connection

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

N_FILES = 3
ROWS_PER_FILE = 150
SHARD_ROWS = 40
PAUSE_WAIT_S = 120
CLI_TIMEOUT_S = 300


def _input(folder: Path) -> list[str]:
    folder.mkdir(parents=True)
    keys: list[str] = []
    for f in range(N_FILES):
        ids = [f"{folder.name}-{f}-{i}" for i in range(ROWS_PER_FILE)]
        pq.write_table(
            pa.table(
                {
                    "id": ids,
                    "x": [i / 100 for i in range(ROWS_PER_FILE)],
                    "n": [i % 4 for i in range(ROWS_PER_FILE)],
                }
            ),
            folder / f"part-{f}.parquet",
        )
        keys += ids
    return keys


def _env(url: str, home: Path, models: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREDCACHE_")}
    env.update(
        PREDCACHE_DATABASE_URL=url, PREDCACHE_HOME=str(home), PREDCACHE_MODELS_DIR=str(models),
        PREDCACHE_WORKERS="2", PREDCACHE_LEASE_SECONDS="30", **extra,
    )  # fmt: skip
    return env


def _start(folder: Path, env: dict[str, str], *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "run", "--model", "toy", "--input", str(folder),
         "--shard-rows", str(SHARD_ROWS), "--json", *extra],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip


def _wait_paused(faults_dir: Path, point: str, proc: subprocess.Popen[str]) -> int:
    marker = faults_dir / f"paused.{point}"
    deadline = time.monotonic() + PAUSE_WAIT_S
    while not marker.exists():
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"the CLI ended before reaching {point}: {err[-1500:]}")
        assert time.monotonic() < deadline, f"{point} not reached"
        time.sleep(0.05)
    return int(marker.read_text())


def _kill_group(proc: subprocess.Popen[str]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.communicate()


def _finish(proc: subprocess.Popen[str], timeout: float = CLI_TIMEOUT_S) -> int:
    try:
        proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)  # a runner that hangs on a dead worker counts as killed
    return proc.returncode


def _rerun_and_check(
    url: str, folder: Path, env: dict[str, str], keys: list[str], tally, fault: str, *extra: str
) -> list[str]:  # type: ignore[no-untyped-def]
    again = _start(folder, env, *extra)
    out, err = again.communicate(timeout=CLI_TIMEOUT_S)
    assert again.returncode == 0, err[-2000:]
    summary = json.loads(out.strip().splitlines()[-1])
    run_id = summary["run_id"]
    with connection(url) as conn:
        run = ledger.get_run(conn, run_id)
        counted = conn.execute(
            "SELECT count(*), count(DISTINCT key) FROM predictions WHERE run_id = %s", (run_id,)
        ).fetchone()
        assert counted is not None
        total, distinct = counted
        stored = {r[0] for r in conn.execute("SELECT key FROM predictions WHERE run_id = %s", (run_id,))}
        others = conn.execute(
            "SELECT count(*) FROM runs WHERE input_uri = %s AND status IN ('verified', 'published') "
            "AND run_id <> %s",
            (str(folder.resolve()), run_id),
        ).fetchone()
        events = runstate.events(conn, run_id)
    lost = len(set(keys) - stored)
    tally.add(fault, lost=lost, duplicated=total - distinct, events=events)
    assert run.status in ("verified", "published") and others == (0,)
    assert lost == 0 and total == distinct == len(keys) == run.rows_out
    return events


@pytest.fixture()
def case(fault_server, tmp_path: Path, toy_models_dir: Path):  # type: ignore[no-untyped-def]
    faults_dir = tmp_path / "faults"
    faults_dir.mkdir()
    folder = tmp_path / f"in{abs(hash(tmp_path)) % 10**8}"
    keys = _input(folder)
    base = _env(fault_server.url, tmp_path / "home", toy_models_dir)
    return fault_server, faults_dir, folder, keys, base


CLI_KILL_POINTS = [
    "plan.after", "score.after_claim", "shard.before_write", "shard.after_marker", "shard.after_copy",
    "shard.after_commit@3", "score.after_engine", "verify.after",
]  # fmt: skip


@pytest.mark.parametrize("where", CLI_KILL_POINTS)
def test_kill_9_of_the_cli_then_a_rerun_stores_every_key_once(case, tally, where: str) -> None:  # type: ignore[no-untyped-def]
    server, faults_dir, folder, keys, base = case
    point = where.split("@")[0]
    env = {**base, "PREDCACHE_FAULTS": f"{where}=pause", "PREDCACHE_FAULTS_DIR": str(faults_dir)}
    proc = _start(folder, env)
    _wait_paused(faults_dir, point, proc)
    _kill_group(proc)
    events = _rerun_and_check(server.url, folder, base, keys, tally, f"kill -9 cli at {where}")
    if point not in ("plan.after", "verify.after"):  # the killed owner's run was taken over
        assert any("took over from" in e for e in events), events


WORKER_KILL_POINTS = ["shard.before_write", "shard.after_marker", "shard.after_copy", "shard.after_commit"]


@pytest.mark.parametrize("point", WORKER_KILL_POINTS)
def test_kill_9_of_a_worker_then_a_rerun_stores_every_key_once(case, tally, point: str) -> None:  # type: ignore[no-untyped-def]
    server, faults_dir, folder, keys, base = case
    env = {
        **base,
        "PREDCACHE_FAULTS": f"{point}@2=pause",
        "PREDCACHE_FAULTS_DIR": str(faults_dir),
        "PREDCACHE_BEAM_RUNNING_MODE": "multi_processing",  # a worker process to kill
    }
    proc = _start(folder, env)
    worker = _wait_paused(faults_dir, point, proc)
    if worker == proc.pid:
        _kill_group(proc)
        pytest.fail("the fault paused in the CLI process, not in a worker process")
    os.kill(worker, signal.SIGKILL)
    (faults_dir / "release").touch()
    _finish(proc, timeout=15)  # the Beam DirectRunner waits forever for a dead worker
    _rerun_and_check(server.url, folder, base, keys, tally, f"kill -9 worker at {point}")


RESTART_POINTS = [
    "score.after_claim",
    "shard.before_write",
    "shard.after_marker",
    "shard.after_copy",
    "shard.after_commit",
]


@pytest.mark.parametrize("point", RESTART_POINTS)
def test_postgresql_restarted_mid_run_then_every_key_is_stored_once(case, tally, point: str) -> None:  # type: ignore[no-untyped-def]
    server, faults_dir, folder, keys, base = case
    env = {**base, "PREDCACHE_FAULTS": f"{point}@2=pause" if point.startswith("shard") else f"{point}=pause",
           "PREDCACHE_FAULTS_DIR": str(faults_dir)}  # fmt: skip
    proc = _start(folder, env)
    _wait_paused(faults_dir, point, proc)
    server.restart()
    (faults_dir / "release").touch()
    code = _finish(proc)
    events = _rerun_and_check(
        server.url, folder, base, keys, tally, f"postgresql restart at {point} (first run exit {code})"
    )
    assert events[-1].endswith("in, " + str(len(keys)) + " out, 0 rejected") or "published" in events[-1]


@pytest.mark.parametrize("publish", [False, True], ids=["run", "run-publish"])
def test_two_runs_of_the_same_input_started_together_store_every_key_once(case, tally, publish: bool) -> None:  # type: ignore[no-untyped-def]
    server, faults_dir, folder, keys, base = case
    extra = ("--publish",) if publish else ()
    first, second = _start(folder, base, *extra), _start(folder, base, *extra)
    codes = sorted([_finish(first), _finish(second)])
    assert codes[0] == 0, "at least one of the twins finishes"
    _rerun_and_check(
        server.url,
        folder,
        base,
        keys,
        tally,
        f"two runs started together{' --publish' if publish else ''} (exits {codes})",
        *extra,
    )


SPARK_POINTS = ["shard.after_commit", "shard.after_copy"]


@pytest.mark.spark
@pytest.mark.parametrize("point", SPARK_POINTS)
def test_a_spark_task_failing_at_a_point_is_retried_and_stores_every_key_once(
    case, tally, point: str
) -> None:  # type: ignore[no-untyped-def]
    """The first task to reach the point fails (after its shard committed, or before); Spark retries it."""
    server, faults_dir, folder, keys, base = case
    spark = ("--engine", "spark", "--spark-master", "local[2,2]")
    env = {**base, "PREDCACHE_FAULTS": f"{point}@1=raise", "PREDCACHE_FAULTS_DIR": str(faults_dir)}
    proc = _start(folder, env, *spark)
    out, err = proc.communicate(timeout=CLI_TIMEOUT_S)
    assert proc.returncode == 0, err[-2000:]
    summary = json.loads(out.strip().splitlines()[-1])
    with connection(server.url) as conn:
        attempts = ledger.get_run(conn, summary["run_id"]).attempts
    # The fault fired, yet the run finished in its first attempt: Spark retried the task.
    assert (faults_dir / f"hit.{point}.1").exists() and attempts == 1
    _rerun_and_check(server.url, folder, base, keys, tally, f"spark task failed at {point}, retried", *spark)
