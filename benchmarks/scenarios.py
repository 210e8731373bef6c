"""Each scenario runs in its own process tree on a fresh database; its result says whether it checked out.

A result: ``scenario``, ``rows`` (input size), ``ok`` (ran and passed its self-check), ``problems``,
``seconds`` (wall time of the process tree), ``rows_per_s`` (input rows / seconds, or the stage's
own timed section for ceilings), ``peak_rss_mb`` (summed RSS of the tree, sampled every 0.2 s).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from benchmarks.checks import Reference, check_ours, check_table
from benchmarks.common import (
    MODEL,
    PEER_TABLE,
    TreeRun,
    create_peer_table,
    drop_database,
    fresh_database,
    python_module,
    run_tree,
    scenario_env,
    tcp_address,
)
from pipelines.core.model import load_model

#: A scenario still running after this long is stopped and counted as failed.
SCENARIO_TIMEOUT_S = 4 * 3600
JDBC_JAR = Path("/usr/share/java/postgresql.jar")


@dataclass(frozen=True)
class Bench:
    """Where one benchmark run works: the server, the scratch folder, the models."""

    server_url: str
    work: Path
    models_dir: Path
    heavy_models_dir: Path | None
    cores: int


def _result(name: str, rows: int, run: TreeRun | None, problems: list[str], **extra: Any) -> dict[str, Any]:
    seconds = run.seconds if run else 0.0
    result: dict[str, Any] = {
        "scenario": name,
        "rows": rows,
        "ok": not problems,
        "problems": problems,
        "seconds": round(seconds, 3),
        "rows_per_s": round(rows / seconds, 1) if seconds and not problems else None,
        "peak_rss_mb": run.peak_rss_mb if run else None,
        "load_1m": round(os.getloadavg()[0], 2),
    }
    result.update(extra)
    return result


def _failed(run: TreeRun) -> list[str]:
    if run.returncode == 0:
        return []
    tail = [line for line in run.stderr.strip().splitlines() if line.strip()][-3:]
    return [f"exit {run.returncode}: {' | '.join(tail)[-600:]}"]


def _ceiling(name: str, rows: int, args: list[str], ref: Reference) -> dict[str, Any]:
    run = run_tree(python_module("benchmarks.ceilings", *args), scenario_env(), timeout=SCENARIO_TIMEOUT_S)
    problems = _failed(run)
    if problems:
        return _result(name, rows, run, problems)
    out = run.last_json()
    if out["rows_in"] != ref.rows_in:
        problems.append(f"{out['rows_in']} input rows, expected {ref.rows_in}")
    if "rows_valid" in out and out["rows_valid"] != ref.rows_valid:
        problems.append(f"{out['rows_valid']} valid rows scored, expected {ref.rows_valid}")
    if "rows_written" in out and out["rows_written"] != ref.rows_valid:
        problems.append(f"{out['rows_written']} rows written, expected {ref.rows_valid}")
    result = _result(name, rows, run, problems, detail=out)
    # A ceiling's rate is its timed section, not its process (which also prepares the rows).
    result["rows_per_s"] = round(out["rows_per_s"], 1) if not problems else None
    return result


def read_ceiling(bench: Bench, source: Path, rows: int, ref: Reference) -> list[dict[str, Any]]:
    return [_ceiling("ceiling_read", rows, ["read", "--input", str(source)], ref)]


def model_ceilings(
    bench: Bench, source: Path, rows: int, ref: Reference, *, models_dir: Path, model: str, label: str
) -> list[dict[str, Any]]:
    """fp32 and int8, each with one intra-op thread and with one per core."""
    results = []
    for signature, precision in (("int8", "int8"), ("full", "fp32")):
        for threads in sorted({1, bench.cores}):
            args = ["model", "--input", str(source), "--models-dir", str(models_dir), "--model", model]
            args += ["--signature", signature, "--threads", str(threads)]
            name = f"ceiling_{label}_{precision}_{threads}t"
            results.append(_ceiling(name, rows, args, ref))
    return results


def write_ceiling(bench: Bench, source: Path, rows: int, ref: Reference) -> list[dict[str, Any]]:
    url = fresh_database(bench.server_url, "write")
    try:
        args = ["write", "--input", str(source), "--database-url", url]
        result = _ceiling("ceiling_write", rows, args, ref)
        if result["ok"]:  # what was written must be right too: counts and the sample keys' scores
            result["problems"] = check_table(url, "predictions", ref)
            result["ok"] = not result["problems"]
            result["rows_per_s"] = result["rows_per_s"] if result["ok"] else None
        return [result]
    finally:
        drop_database(bench.server_url, url)


def ours(bench: Bench, engine: str, source: Path, rows: int, ref: Reference) -> dict[str, Any]:
    """`predcache run --engine ENGINE --publish --json` end to end (read, score, write, verify, publish)."""
    url = fresh_database(bench.server_url, engine)
    home = bench.work / f"home-{engine}"
    env = scenario_env(PREDCACHE_DATABASE_URL=url, PREDCACHE_HOME=str(home))
    command = python_module("pipelines.cli", "run", "--model", MODEL, "--input", str(source))
    command += ["--engine", engine, "--publish", "--json"]
    phases: dict[str, float] = {}
    try:
        started = time.time()
        run = run_tree(command, env, timeout=SCENARIO_TIMEOUT_S)
        problems = _failed(run)
        summary: dict[str, Any] = {}
        if not problems:
            summary = run.last_json()
            problems = check_ours(url, ref, summary, MODEL)
            phases = timeline(url, summary["run_id"], started, started + run.seconds)
    finally:
        drop_database(bench.server_url, url)
    return _result(f"ours_{engine}", rows, run, problems, detail=summary, phases=phases)


#: Wall-time phases of one run, from the ledger's timestamps (see ``timeline``).
PHASES = (
    "start-up + input check",
    "plan: hash every key",
    "engine start until 1st shard stored",
    "shards stored (1st to last)",
    "engine shutdown",
    "verify + index + attach",
    "publish + exit",
)


def timeline(url: str, run_id: int, started: float, ended: float) -> dict[str, float]:
    """Seconds per phase of a run: process start, the ledger's timestamps (transaction starts), process end.

    ``created_at`` is taken before the plan hashes the keys, ``started_at`` when scoring starts,
    shard ``done_at`` as each shard commits, ``finished_at`` as verify starts, ``published_at`` as
    publish starts (after verify, index and attach committed).
    """
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT extract(epoch FROM r.created_at), extract(epoch FROM r.started_at), "
            "extract(epoch FROM min(s.done_at)), extract(epoch FROM max(s.done_at)), "
            "extract(epoch FROM r.finished_at), extract(epoch FROM p.published_at) "
            "FROM runs r JOIN run_shards s USING (run_id) LEFT JOIN publishes p USING (publish_id) "
            "WHERE r.run_id = %s GROUP BY r.run_id, p.publish_id",
            (run_id,),
        ).fetchone()
    if row is None or any(v is None for v in row):
        return {}
    marks = [started, *(float(v) for v in row), ended]
    return {name: round(b - a, 2) for name, a, b in zip(PHASES, marks[:-1], marks[1:], strict=True)}


def peer_skip_reason(engine: str, server_url: str) -> str | None:
    """Why a peer cannot run here (None when it can)."""
    if engine == "spark" and tcp_address(server_url) is None:
        return (
            "the Spark peer writes over JDBC, which needs a TCP server; this run's server is a unix socket "
            "(rerun with PREDCACHE_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres)"
        )
    if engine == "spark" and not JDBC_JAR.is_file():
        return f"no PostgreSQL JDBC driver at {JDBC_JAR} (apt-get install -y libpostgresql-jdbc-java)"
    return None


def peer(bench: Bench, engine: str, source: Path, rows: int, ref: Reference) -> dict[str, Any]:
    """The peer on ``engine`` as its docs show it, into a plain table on a fresh database."""
    model = load_model(bench.models_dir, MODEL)  # its default signature: the int8 file ours scores with
    model_file = model.version_dir / model.file_name
    url = fresh_database(bench.server_url, f"peer_{engine}")
    try:
        create_peer_table(url)
        args = ["--input", str(source), "--model-file", str(model_file), "--database-url", url]
        command = python_module(f"benchmarks.peer_{engine}", *args)
        run = run_tree(command, scenario_env(), timeout=SCENARIO_TIMEOUT_S)
        problems = _failed(run) or check_table(url, PEER_TABLE, ref)
    finally:
        drop_database(bench.server_url, url)
    return _result(f"peer_{engine}", rows, run, problems)


#: The simple pipeline's COPY methods (``benchmarks.simple_pipeline``), each a scenario.
SIMPLE_METHODS: tuple[tuple[str, list[str]], ...] = (
    ("csv", ["--copy", "csv"]),
    ("binary", ["--copy", "binary"]),
    ("adbc", ["--copy", "adbc"]),
    ("binary_unlogged", ["--copy", "binary", "--unlogged"]),
)


def _adbc_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("adbc_driver_postgresql") is not None


def simple(bench: Bench, source: Path, rows: int, ref: Reference) -> list[dict[str, Any]]:
    """The single-process baseline with each COPY method; also a write ceiling (its COPY + index)."""
    results = []
    for label, flags in SIMPLE_METHODS:
        if label == "adbc" and not _adbc_available():
            continue
        url = fresh_database(bench.server_url, "simple")
        try:
            args = ["--input", str(source), "--database-url", url, *flags]
            run = run_tree(python_module("benchmarks.simple_pipeline", *args), scenario_env())
            problems = _failed(run) or check_table(url, "simple_predictions", ref)
        finally:
            drop_database(bench.server_url, url)
        out = run.last_json() if not _failed(run) else {}
        results.append(_result(f"simple_{label}", rows, run, problems, detail=out))
        if out and not problems:
            stages = out["stage_seconds"]
            write_s = stages["write"] + stages["index"]
            ceiling = _result(f"ceiling_write_{label}", rows, None, [], detail=stages)
            ceiling.update(seconds=round(write_s, 3), rows_per_s=round(out["rows_in"] / write_s, 1))
            results.append(ceiling)
    return results


#: One day of real flights (945 rows): a run this small is almost all fixed cost.
SMALL_DAY = "2013-07-02"


def small_run(bench: Bench, source: Path, rows: int, ref: Reference) -> list[dict[str, Any]]:
    """`predcache run` over one day, twice (the second is warm); the fixed cost of a run per engine."""
    from datetime import date

    from pipelines.data.flights import write_flights

    day_dir = bench.work / "small-day"
    if not (day_dir / f"date={SMALL_DAY}").is_dir():
        write_flights(day_dir, start=date.fromisoformat(SMALL_DAY), end=date.fromisoformat(SMALL_DAY))
    results = []
    for engine in ("beam",):
        url = fresh_database(bench.server_url, f"small_{engine}")
        env = scenario_env(
            PREDCACHE_DATABASE_URL=url, PREDCACHE_HOME=str(bench.work / f"home-small-{engine}")
        )
        try:
            for attempt in ("cold", "warm"):
                command = python_module("pipelines.cli", "run", "--model", MODEL, "--input")
                command += [str(day_dir / f"date={SMALL_DAY}"), "--engine", engine, "--json", "--rerun"]
                run = run_tree(command, env, timeout=SCENARIO_TIMEOUT_S)
                problems = _failed(run)
                summary = run.last_json() if not problems else {}
                results.append(
                    _result(
                        f"small_{engine}_{attempt}", summary.get("rows_in", 0), run, problems, detail=summary
                    )
                )
        finally:
            drop_database(bench.server_url, url)
    return results
