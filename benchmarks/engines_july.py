"""Side by side on all of July 2013: `predcache run` on Spark, on Beam, and onnxruntime alone.

    .venv/bin/predcache data flights --out /tmp/flights_july --start 2013-07-01 --end 2013-07-31
    .venv/bin/python -m benchmarks.engines_july [--input /tmp/flights_july] [--shard-rows N]

Each engine runs the real CLI in a subprocess (plan, score, verify; the JVM or Beam's
workers start cold, as a user sees it) against its own fresh database, so both score
every row; then each runs twice in this process and the second (warm) run is timed.
The ceiling is the same int8 model in this process: ``core.model`` predicting the
validated rows, with no engine, no shards and no database. Engine rows/s = input rows
over the whole wall time of the command (or of ``run_job``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import pyarrow.dataset as ds

from benchmarks.common import drop_database, fresh_database
from pipelines.core.model import load_model
from pipelines.core.validate import validate
from pipelines.jobs import RunRequest, run_job
from pipelines.settings import DEFAULT_BATCH_ROWS, DEFAULT_MODELS_DIR, Settings
from pipelines.store.db import resolve_url

MODEL = "flights_delay"
DEFAULT_INPUT = Path("/tmp/flights_july")
ONNX_REPEATS = 5
ENGINES = ("spark", "beam")
WRITE_JULY = "predcache data flights --start 2013-07-01 --end 2013-07-31"


@dataclass(frozen=True)
class Bench:
    """Where and how the engines run: the database server, a scratch home, the input."""

    server_url: str
    home: Path
    source: Path
    shard_rows: int | None


@dataclass(frozen=True)
class Measured:
    what: str
    rows: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.rows / self.seconds


def run_cli(bench: Bench, engine: str) -> Measured:
    """`predcache run --engine ENGINE --json` in a subprocess on a fresh database (cold start)."""
    url = fresh_database(bench.server_url, "july")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREDCACHE_")}
    env.update(PREDCACHE_DATABASE_URL=url, PREDCACHE_HOME=str(bench.home / engine))
    command = [sys.executable, "-m", "pipelines.cli", "run", "--model", MODEL, "--input", str(bench.source)]
    command += ["--engine", engine, "--json"]
    if bench.shard_rows:
        command += ["--shard-rows", str(bench.shard_rows)]
    try:
        started = time.perf_counter()
        result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - started
    finally:
        drop_database(bench.server_url, url)
    if result.returncode != 0:
        raise SystemExit(f"{engine} run failed: {result.stderr.strip()[-1000:]}")
    summary = json.loads(result.stdout)
    return Measured(f"predcache run --engine {engine} (CLI, cold)", summary["rows_in"], seconds)


def run_warm(bench: Bench, engine: str) -> Measured:
    """The second of two runs of the input in this process (Spark's JVM and session already up)."""
    url = fresh_database(bench.server_url, "july")
    settings = Settings(database_url=url, home=bench.home / f"{engine}-warm")
    request = RunRequest(model=MODEL, input=bench.source, engine=engine, shard_rows=bench.shard_rows)
    try:
        run_job(settings, request)
        started = time.perf_counter()
        summary = run_job(settings, replace(request, rerun=True))
        seconds = time.perf_counter() - started
    finally:
        drop_database(bench.server_url, url)
    return Measured(f"{engine}: 2nd run in one process (warm)", summary.rows_in, seconds)


def run_onnxruntime(source: Path) -> Measured:
    """The ceiling: the same int8 model scoring the validated rows in this process (best of a few)."""
    model = load_model(DEFAULT_MODELS_DIR, MODEL)
    columns = [model.card.key, *model.card.input_names]
    table = ds.dataset(source, format="parquet", partitioning="hive").to_table(columns=columns)
    good = validate(table, model.card).good
    model.predict(good.slice(0, 64), batch_rows=DEFAULT_BATCH_ROWS)  # warm the session up
    best = float("inf")
    for _ in range(ONNX_REPEATS):
        started = time.perf_counter()
        model.predict(good, batch_rows=DEFAULT_BATCH_ROWS)
        best = min(best, time.perf_counter() - started)
    return Measured(f"onnxruntime alone ({model.file_name}, valid rows)", good.num_rows, best)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, default=DEFAULT_INPUT, help="the July flights folder")
    parser.add_argument("--shard-rows", type=int, help="rows per shard (default: PREDCACHE_SHARD_ROWS)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # engines' import-time chatter would interleave with the table
    if not args.input.is_dir():
        raise SystemExit(f"{args.input} is missing; write it with: {WRITE_JULY} --out {args.input}")
    settings = Settings()
    server_url = resolve_url(settings.database_url, settings.embedded_pgdata)
    with tempfile.TemporaryDirectory(prefix="predcache-bench-") as tmp:
        bench = Bench(server_url=server_url, home=Path(tmp), source=args.input, shard_rows=args.shard_rows)
        cold = [run_cli(bench, engine) for engine in ENGINES]
        warm = [run_warm(bench, engine) for engine in ENGINES]
    ceiling = run_onnxruntime(args.input)
    shard_rows = args.shard_rows or settings.shard_rows
    print(f"input {args.input}: {cold[0].rows} rows; {os.cpu_count()} CPUs; shard_rows {shard_rows}")
    print(f"{'what':<48}{'rows':>8}{'seconds':>10}{'rows/s':>11}{'/ ORT':>9}")
    for m in [*cold, *warm, ceiling]:
        print(f"{m.what:<48}{m.rows:>8}{m.seconds:>10.3f}{m.rate:>11,.0f}{m.rate / ceiling.rate:>9.4f}")
    print(f"spark / beam: cold {cold[0].rate / cold[1].rate:.2f}x, warm {warm[0].rate / warm[1].rate:.2f}x")


if __name__ == "__main__":
    main()
