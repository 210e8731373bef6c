"""Incremental refresh vs a full rescoring, side by side, on both engines.

    .venv/bin/python -m benchmarks.incremental [--rows 10000000] [--engines beam,spark]

A snapshot of ``--rows`` synthetic flights (``predcache data synth``) is scored in full and
published. A second snapshot changes 1 % of the rows (temperature + 1 degree) and adds 0.5 %
new keys. Then, per engine, each command timed as a whole process:

- full: ``predcache run`` of the second snapshot into a fresh database (every row scored);
- incremental: ``predcache run --incremental`` of the second snapshot into a database where
  the first snapshot is published (only changed and new rows scored).

Target (issue 12): incremental <= 15 % of the full run's time. The two caches are then
compared key for key (predictions_current: key, score, label) and must be equal. Prints a
markdown table and writes benchmarks/out/incremental.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from benchmarks.common import drop_database, fresh_database, python_module, run_tree, scenario_env

OUT = Path(__file__).resolve().parent / "out" / "incremental.json"
MODEL = "flights_delay"
CHANGED_PER_MILLE = 10  # 1 %
NEW_PER_MILLE = 5  # 0.5 %
TARGET = 0.15
TIMEOUT_S = 4 * 3600


def _second_snapshot(first: Path, second: Path) -> dict[str, int]:
    """Copy ``first`` file by file, changing 1 % of rows and adding 0.5 % new keys (deterministic)."""
    from pipelines.core.keys import key_hash

    changed = added = rows = 0
    for path in sorted(first.rglob("*.parquet")):
        table = pq.read_table(path)
        bucket = np.abs(key_hash(table.column("flight_id")) % 1000)
        change = pa.array(bucket < CHANGED_PER_MILLE)
        temp = table.column("temp")
        table = table.set_column(
            table.schema.get_field_index("temp"), "temp", pc.if_else(change, pc.add(temp, 1.0), temp)
        )
        new = table.filter(pa.array((bucket >= 500) & (bucket < 500 + NEW_PER_MILLE)))
        new = new.set_column(0, "flight_id", pc.binary_join_element_wise(new.column("flight_id"), "n", ""))
        out = second / path.relative_to(first)
        out.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.concat_tables([table, new.select(table.column_names)]), out)
        rows += table.num_rows + new.num_rows
        changed += int(pc.sum(change).as_py() or 0)
        added += new.num_rows
    return {"rows": rows, "changed": changed, "added": added}


def _cache_digest(url: str) -> tuple[int, str]:
    """(rows, sha256 of every (key, score, label) of predictions_current in key order)."""
    import psycopg

    digest = hashlib.sha256()
    rows = 0
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        query = (
            "COPY (SELECT key, score, label FROM predictions_current WHERE model = 'flights_delay' "
            'ORDER BY key COLLATE "C") TO STDOUT'
        )
        with cur.copy(query) as copy:
            for block in copy:
                digest.update(block)
                rows += bytes(block).count(b"\n")
    return rows, digest.hexdigest()


def _run(url: str, home: Path, source: Path, engine: str, *extra: str) -> dict[str, Any]:
    env = scenario_env(PREDCACHE_DATABASE_URL=url, PREDCACHE_HOME=str(home))
    command = python_module(
        "pipelines.cli",
        "run",
        "--model",
        MODEL,
        "--input",
        str(source),
        "--engine",
        engine,
        "--publish",
        "--json",
    )
    result = run_tree([*command, *extra], env, timeout=TIMEOUT_S)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed: {result.stderr[-3000:]}")
    return {**result.last_json(), "wall_s": round(result.seconds, 2), "peak_rss_mb": result.peak_rss_mb}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=int(os.environ.get("BENCH_ROWS", 10_000_000)))
    parser.add_argument("--engines", default="beam,spark")
    args = parser.parse_args(argv)

    from pipelines.data.synth import write_synth
    from pipelines.settings import Settings
    from pipelines.store.db import resolve_url

    settings = Settings()
    server = resolve_url(settings.database_url, settings.embedded_pgdata)
    load = [round(x, 2) for x in os.getloadavg()]
    results = []
    with tempfile.TemporaryDirectory(prefix="predcache-incremental-") as tmp_text:
        tmp = Path(tmp_text)
        first, second = tmp / "snapshot-1", tmp / "snapshot-2"
        write_synth(first, rows=args.rows)
        change = _second_snapshot(first, second)
        for engine in args.engines.split(","):
            full_url = fresh_database(server, "incr_full")
            incr_url = fresh_database(server, "incr")
            try:
                _run(incr_url, tmp / "home", first, engine)
                incremental = _run(incr_url, tmp / "home", second, engine, "--incremental")
                full = _run(full_url, tmp / "home", second, engine)
                same = _cache_digest(incr_url) == _cache_digest(full_url)
            finally:
                drop_database(server, full_url)
                drop_database(server, incr_url)
            ratio = incremental["wall_s"] / full["wall_s"]
            results.append(
                {
                    "engine": engine,
                    "full_s": full["wall_s"],
                    "incremental_s": incremental["wall_s"],
                    "ratio": round(ratio, 3),
                    "target_met": ratio <= TARGET,
                    "rows_scored": incremental["rows_out"],
                    "rows_unchanged": incremental["rows_unchanged"],
                    "caches_equal": same,
                    "step_seconds": {
                        "full": full["step_seconds"],
                        "incremental": incremental["step_seconds"],
                    },
                    "peak_rss_mb": {"full": full["peak_rss_mb"], "incremental": incremental["peak_rss_mb"]},
                }
            )
            if not same:
                raise SystemExit(f"{engine}: the incremental cache differs from a full rescoring")
    report = {
        "rows": change,
        "load_average": load,
        "cpus": os.cpu_count(),
        "target": TARGET,
        "engines": results,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(report, indent=2))
    print(
        f"snapshot 2: {change['rows']:,} rows ({change['changed']:,} changed, {change['added']:,} new); "
        f"load average before: {load}\n"
    )
    print("| engine | full s | incremental s | ratio | target <= 0.15 | scored | unchanged | equal |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['engine']} | {r['full_s']:.1f} | {r['incremental_s']:.1f} | {r['ratio']:.3f} | "
            f"{'met' if r['target_met'] else 'missed'} | {r['rows_scored']:,} | {r['rows_unchanged']:,} | "
            f"{r['caches_equal']} |"
        )
    for r in results:
        for run in ("full", "incremental"):
            steps = ", ".join(f"{k} {v:.1f}" for k, v in r["step_seconds"][run].items())
            print(f"{r['engine']} {run}: {steps} s")
    return report


if __name__ == "__main__":
    main()
