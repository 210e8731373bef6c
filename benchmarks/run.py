"""`make bench`: predcache against its peers and the physical ceilings, on the same rows, model and database.

For each input size (synthetic flights, ``pipelines.data.synth``) every selected scenario runs in its
own process tree on a fresh database and checks its own result (row counts; sample keys equal to raw
onnxruntime bit for bit); then ``RESULTS.md``, ``results.json`` and ``throughput.png`` are written.

Environment (read here, at the edge):
    BENCH_ROWS          comma-separated input sizes (default 1000000,3000000,10000000)
    BENCH_SCENARIOS     comma-separated subset of SCENARIOS (default: all; quick mode, every size at
                        most 200000, e.g. BENCH_ROWS=200000: QUICK_SCENARIOS, no peers, no heavy model)
    BENCH_PEER_MAX_ROWS peers run at sizes up to this (default 1000000; they are slow by design)
    BENCH_HEAVY_MAX_ROWS the compute-heavy MLP ceiling runs at sizes up to this (default 1000000)
    BENCH_OUT_DIR       where the results go (default: this folder)
    BENCH_WORK_DIR      synthetic data and scratch (default: $TMPDIR/predcache-bench; data is reused)
    BENCH_APPEND=1      keep the scenarios of the results.json already in BENCH_OUT_DIR that this run
                        does not measure again (e.g. add the peers at 10M to a full run)
    PREDCACHE_DATABASE_URL  the server to benchmark on; unset: the embedded server (then the Spark
                        peer, which writes over JDBC and needs TCP, is skipped with the reason)
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import report
from benchmarks.checks import Reference, reference
from benchmarks.common import MODEL, answers, tcp_address
from benchmarks.envinfo import load_average, machine, versions
from benchmarks.scenarios import (
    Bench,
    model_ceilings,
    ours,
    peer,
    peer_skip_reason,
    read_ceiling,
    simple,
    small_run,
    write_ceiling,
)
from pipelines.data.synth import synth_rows, write_synth
from pipelines.settings import DEFAULT_MODELS_DIR

DEFAULT_ROWS = (1_000_000, 3_000_000, 10_000_000)
SCENARIOS = (
    "read",
    "model",
    "heavy",
    "write",
    "simple",
    "small",
    "ours_beam",
    "ours_spark",
    "peer_beam",
    "peer_spark",
)
#: Quick mode: when every size is at most this and BENCH_SCENARIOS is unset, QUICK_SCENARIOS run.
QUICK_MAX_ROWS = 200_000
QUICK_SCENARIOS = ("read", "model", "write", "simple", "small", "ours_beam", "ours_spark")
DEFAULT_PEER_MAX_ROWS = 1_000_000
DEFAULT_HEAVY_MAX_ROWS = 1_000_000
HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Config:
    rows: tuple[int, ...]
    scenarios: tuple[str, ...]
    peer_max_rows: int
    heavy_max_rows: int
    out_dir: Path
    work_dir: Path
    database_url: str | None
    home: Path | None
    append: bool = False


def _ints(text: str) -> tuple[int, ...]:
    values = tuple(int(part.replace("_", "")) for part in text.split(",") if part.strip())
    if not values or min(values) < 1:
        raise SystemExit(f"BENCH_ROWS={text!r}: give positive row counts, e.g. BENCH_ROWS=20000,200000")
    return tuple(sorted(set(values)))


def config_from_env(env: dict[str, str]) -> Config:
    rows = _ints(env.get("BENCH_ROWS", ",".join(map(str, DEFAULT_ROWS))))
    default = QUICK_SCENARIOS if max(rows) <= QUICK_MAX_ROWS else SCENARIOS
    scenarios = tuple(
        s.strip() for s in env.get("BENCH_SCENARIOS", ",".join(default)).split(",") if s.strip()
    )
    unknown = sorted(set(scenarios) - set(SCENARIOS))
    if unknown:
        raise SystemExit(f"BENCH_SCENARIOS: unknown {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    return Config(
        rows=rows,
        scenarios=tuple(s for s in SCENARIOS if s in scenarios),
        peer_max_rows=int(env.get("BENCH_PEER_MAX_ROWS", DEFAULT_PEER_MAX_ROWS)),
        heavy_max_rows=int(env.get("BENCH_HEAVY_MAX_ROWS", DEFAULT_HEAVY_MAX_ROWS)),
        out_dir=Path(env.get("BENCH_OUT_DIR", str(HERE))),
        work_dir=Path(env.get("BENCH_WORK_DIR", str(Path(tempfile.gettempdir()) / "predcache-bench"))),
        database_url=env.get("PREDCACHE_DATABASE_URL") or None,
        home=Path(env["PREDCACHE_HOME"]) if env.get("PREDCACHE_HOME") else None,
        append=env.get("BENCH_APPEND", "") not in ("", "0"),
    )


def _server(config: Config) -> tuple[str, str]:
    """The server every scenario of this run uses, and how it was chosen."""
    if config.database_url:
        if not answers(config.database_url):
            raise SystemExit(
                "PREDCACHE_DATABASE_URL does not answer; start that server or unset the variable"
            )
        address = tcp_address(config.database_url)
        where = f"{address[0]}:{address[1]}" if address else "a unix socket"
        return config.database_url, f"PREDCACHE_DATABASE_URL ({where})"
    from pipelines.store.db import embedded_url

    home = config.home or config.work_dir / "home"
    return embedded_url(home / "pg"), f"embedded PostgreSQL (data in {home / 'pg'})"


def _data(config: Config, rows: int) -> Path:
    folder = config.work_dir / f"data-{rows}"
    if synth_rows(folder) != rows:
        started = time.perf_counter()
        write_synth(folder, rows=rows)
        print(
            f"  wrote {rows:,} synthetic rows to {folder} in {time.perf_counter() - started:.1f} s",
            flush=True,
        )
    return folder


def _say(result: dict[str, Any]) -> None:
    rate = f"{result['rows_per_s']:>12,.0f} rows/s" if result.get("rows_per_s") else " " * 19
    rss = f"{result['peak_rss_mb']:>8,.0f} MB" if result.get("peak_rss_mb") else " " * 11
    state = "ok" if result["ok"] else "FAILED: " + "; ".join(result["problems"])
    print(f"  {result['scenario']:<28}{result['seconds']:>9.1f} s{rate}{rss}  {state}", flush=True)


def _plan(config: Config, bench: Bench, rows: int, smallest: int) -> list[tuple[str, Callable[..., Any]]]:
    """(scenario, run(source, rows, ref) -> result(s)) in the order they run at this size."""
    plan: list[tuple[str, Callable[..., Any]]] = []
    wanted = set(config.scenarios)
    if "read" in wanted:
        plan.append(("read", lambda s, n, r: read_ceiling(bench, s, n, r)))
    if "model" in wanted:
        plan.append(
            (
                "model",
                lambda s, n, r: model_ceilings(
                    bench, s, n, r, models_dir=bench.models_dir, model=MODEL, label="flights"
                ),
            )
        )
    if (
        "heavy" in wanted
        and bench.heavy_models_dir is not None
        and (rows <= config.heavy_max_rows or rows == smallest)
    ):
        heavy_dir = bench.heavy_models_dir
        plan.append(
            (
                "heavy",
                lambda s, n, r: model_ceilings(
                    bench, s, n, r, models_dir=heavy_dir, model="flights_heavy", label="heavy"
                ),
            )
        )
    if "write" in wanted:
        plan.append(("write", lambda s, n, r: write_ceiling(bench, s, n, r)))
    if "simple" in wanted:
        plan.append(("simple", lambda s, n, r: simple(bench, s, n, r)))
    if "small" in wanted and rows == smallest:
        plan.append(("small", lambda s, n, r: small_run(bench, s, n, r)))
    for engine in ("beam", "spark"):
        if f"ours_{engine}" in wanted:
            plan.append((f"ours_{engine}", lambda s, n, r, e=engine: ours(bench, e, s, n, r)))
    for engine in ("beam", "spark"):
        if f"peer_{engine}" in wanted and (rows <= config.peer_max_rows or rows == smallest):
            plan.append((f"peer_{engine}", lambda s, n, r, e=engine: peer(bench, e, s, n, r)))
    return plan


def run(config: Config) -> dict[str, Any]:
    """Run every selected scenario at every size; returns the results document."""
    config.work_dir.mkdir(parents=True, exist_ok=True)
    server_url, server_how = _server(config)
    heavy_dir: Path | None = None
    if "heavy" in config.scenarios:
        from benchmarks.heavy_model import build_heavy_model

        heavy_dir = Path(tempfile.mkdtemp(prefix="models-", dir=config.work_dir))
        started = time.perf_counter()
        build_heavy_model(heavy_dir)
        print(f"built the compute-heavy MLP in {time.perf_counter() - started:.0f} s", flush=True)
    try:
        return _run_all(config, server_url, server_how, heavy_dir)
    finally:
        if heavy_dir is not None:
            shutil.rmtree(heavy_dir, ignore_errors=True)


def _run_all(config: Config, server_url: str, server_how: str, heavy_dir: Path | None) -> dict[str, Any]:
    bench = Bench(
        server_url=server_url,
        work=config.work_dir,
        models_dir=DEFAULT_MODELS_DIR,
        heavy_models_dir=heavy_dir,
        cores=os.cpu_count() or 1,
    )
    skipped: list[dict[str, str]] = []
    for engine in ("spark",):
        reason = peer_skip_reason(engine, server_url)
        if reason and f"peer_{engine}" in config.scenarios:
            print(f"skipping peer_{engine}: {reason}", flush=True)
            skipped.append({"scenario": f"peer_{engine}", "reason": reason})
    blocked = {item["scenario"] for item in skipped}
    results: list[dict[str, Any]] = []
    references: dict[int, Reference] = {}
    for rows in config.rows:
        print(f"== {rows:,} rows (load {load_average()})", flush=True)
        source = _data(config, rows)
        references[rows] = ref = reference(source, bench.models_dir, MODEL, rows_hint=rows)
        print(f"  reference: {ref.rows_in:,} rows, {ref.rows_valid:,} valid, {len(ref.sample)} sample keys")
        for name, step in _plan(config, bench, rows, config.rows[0]):
            if name in blocked:
                continue
            produced = step(source, rows, ref)
            for result in produced if isinstance(produced, list) else [produced]:
                results.append(result)
                _say(result)
    return {
        "config": {
            "rows": list(config.rows),
            "scenarios": list(config.scenarios),
            "peer_max_rows": config.peer_max_rows,
            "heavy_max_rows": config.heavy_max_rows,
        },
        "database": {"how": server_how, "server_version": versions(server_url)["postgres"]},
        "machine": machine(),
        "versions": versions(server_url),
        "valid_rows": {str(n): ref.rows_valid for n, ref in references.items()},
        "skipped": skipped,
        "scenarios": results,
    }


def _appended(previous: Path, document: dict[str, Any]) -> dict[str, Any]:
    """``document`` plus the scenarios of an earlier results file that it did not measure again."""
    if not previous.is_file():
        return document
    old = json.loads(previous.read_text())
    fresh = {(r["scenario"], r["rows"]) for r in document["scenarios"]}
    kept = [r for r in old["scenarios"] if (r["scenario"], r["rows"]) not in fresh]
    rows = sorted({*old["config"]["rows"], *document["config"]["rows"]})
    scenarios = [s for s in SCENARIOS if s in {*old["config"]["scenarios"], *document["config"]["scenarios"]}]
    return {
        **document,
        "config": {
            **document["config"],
            "rows": rows,
            "scenarios": scenarios,
            "appended": document["config"],
        },
        "valid_rows": {**old.get("valid_rows", {}), **document["valid_rows"]},
        "skipped": [
            *(
                s
                for s in old.get("skipped", [])
                if s["scenario"] not in {r["scenario"] for r in document["scenarios"]}
            ),
            *document["skipped"],
        ],
        "scenarios": sorted([*kept, *document["scenarios"]], key=lambda r: r["rows"]),
    }


def main() -> int:
    config = config_from_env(dict(os.environ))
    sizes = ", ".join(f"{n:,}" for n in config.rows)
    print(f"benchmark: sizes {sizes}; scenarios {', '.join(config.scenarios)}")
    print(f"machine load at start (1, 5, 15 min): {load_average()}", flush=True)
    document = run(config)
    if config.append:
        document = _appended(config.out_dir / report.RESULTS_JSON, document)
    document.update(report.summarize(document))
    report.write_all(document, config.out_dir)
    print(f"wrote {config.out_dir / report.RESULTS_MD}, {report.RESULTS_JSON} and {report.PLOT_PNG}")
    if not document["self_checks_passed"]:
        print("some scenarios failed their self-check (see RESULTS.md)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
