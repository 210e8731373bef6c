"""One day through Airflow vs the same day through the CLI: `airflow dags test` next to `predcache run`.

    .venv/bin/python -m benchmarks.airflow_day [--day 2013-07-02] [--repeat 2] [--data-dir DIR]

Both run the real commands in subprocesses, as a user starts them, each against its own fresh
cache database (so both plan, score on Beam, verify and publish every row of the day). The
Airflow side uses a throw-away AIRFLOW_HOME with SQLite metadata, migrated once before timing.
The difference is Airflow's own cost per run: CLI start-up, DAG parsing, the in-process
Execution API, and one process per task (six tasks) instead of one.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from benchmarks.common import drop_database, fresh_database
from pipelines.settings import Settings
from pipelines.store.db import resolve_url

REPO = Path(__file__).resolve().parent.parent
DAG_ID = "batch_predict_flights_delay"
MODEL = "flights_delay"
BIN = Path(sys.executable).parent


def _env(url: str, scratch: Path, data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREDCACHE_", "AIRFLOW"))}
    home = scratch / "airflow"
    env.update(
        PREDCACHE_DATABASE_URL=url,
        PREDCACHE_HOME=str(scratch / "predcache"),
        PREDCACHE_DATA_DIR=str(data_dir),
        AIRFLOW_HOME=str(home),
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home / 'airflow.db'}",
        AIRFLOW__CORE__DAGS_FOLDER=str(REPO / "dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
    )
    return env


def _timed(args: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(args, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{' '.join(args[:3])} failed:\n{done.stderr[-3000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--day", type=date.fromisoformat, default=date(2013, 7, 2))
    parser.add_argument("--repeat", type=int, default=2, help="runs of each side (alternating)")
    parser.add_argument(
        "--data-dir", type=Path, help="day-partitioned flights (default: written to a temp dir)"
    )
    args = parser.parse_args()

    settings = Settings()
    server_url = resolve_url(settings.database_url, settings.embedded_pgdata)
    with tempfile.TemporaryDirectory(prefix="pc_airflow_day_") as tmp:
        scratch = Path(tmp)
        data_dir = args.data_dir
        if data_dir is None:
            from pipelines.data.flights import write_flights

            data_dir = scratch / "flights"
            write_flights(data_dir, start=args.day, end=args.day)
        migrate_env = _env("", scratch, data_dir)
        migrate_seconds = _timed([str(BIN / "airflow"), "db", "migrate"], migrate_env)
        times: dict[str, list[float]] = {"airflow dags test": [], "predcache run": []}
        for _ in range(args.repeat):
            for side in times:
                url = fresh_database(server_url, "airflow")
                env = _env(url, scratch, data_dir)
                if side == "predcache run":
                    day_input = str(data_dir / f"date={args.day}")
                    command = [
                        str(BIN / "predcache"),
                        "run",
                        "--model",
                        MODEL,
                        "--input",
                        day_input,
                        "--publish",
                    ]
                else:
                    command = [str(BIN / "airflow"), "dags", "test", DAG_ID, args.day.isoformat()]
                try:
                    times[side].append(_timed(command, env))
                finally:
                    drop_database(server_url, url)

    print(f"one day ({args.day}) of {MODEL} on beam, wall seconds over {args.repeat} run(s):")
    print(f"{'':20s} {'median':>8s} {'min':>8s} {'max':>8s}")
    for side, values in times.items():
        print(f"{side:20s} {statistics.median(values):8.1f} {min(values):8.1f} {max(values):8.1f}")
    print(f"(airflow db migrate once before timing: {migrate_seconds:.1f} s)")
    result = {side: [round(v, 2) for v in values] for side, values in times.items()}
    print(
        json.dumps(
            {
                "day": args.day.isoformat(),
                "seconds": result,
                "airflow_db_migrate_s": round(migrate_seconds, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
