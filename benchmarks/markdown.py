"""RESULTS.md: machine and versions first, then the headline table, the targets, and every scenario."""

from __future__ import annotations

import time
from typing import Any

METHOD = """\
## What was measured

All scenarios score the same synthetic input (`pipelines.data.synth`: the real 2013 NYC flights
replicated under new keys `"{flight_id}:r{k}"`, one folder per day) with the same model file
(`flights_delay`, static QDQ int8, the default signature) into the same PostgreSQL server, each on a
fresh database, each in its own process tree. Rates are **input rows per second** over the wall time
of the whole process (start-up included); peak RSS is the sum over the process tree (sampled every
0.2 s; the database server is not part of it). A scenario counts only if its self-check passed:
row counts (rows in / scored / rejected) and a sample of ~200 keys whose stored score equals raw
onnxruntime bit for bit (and label exactly).

* **ours_beam / ours_spark**: `predcache run --model flights_delay --engine E --publish --json`
  (plan, read, validate, score, COPY exactly once per shard, verify, index + attach, publish), default
  settings (2 workers, 1 onnxruntime thread each, 20,000-row shards).
* **peer_beam**: Beam's documented `RunInference(KeyedModelHandler(OnnxModelHandlerNumpy(...)))` on
  `ReadFromParquet` rows, null/NaN rows filtered out, then `BatchElements` + psycopg `executemany`
  INSERT into a plain table with our columns and indexes. Adapter: a custom `inference_fn` that turns
  the batch of row arrays into one [N, 1] tensor per model input. DirectRunner, multi-processing,
  2 workers (as ours).
* **peer_spark**: Spark's documented `predict_batch_udf` (one onnxruntime session per Python worker,
  batch 8,192) on `spark.read.parquet`, `na.drop()`, then `DataFrame.write.jdbc(mode="append")` with
  Spark's default JDBC options, into the same plain table. Adapter: `predict` names each of the 12
  input columns (predict_batch_udf maps columns to parameters by count). `local[*]` (as ours).
* **simple_{csv,binary,adbc,binary_unlogged}**: `benchmarks/simple_pipeline.py`, the single-process
  script one writes in an afternoon: read the Parquet files, int8 onnxruntime (1 thread, 8,192-row
  batches, rows with a null dropped), COPY into an unindexed table (pyarrow CSV text, our binary
  encoder, or the ADBC driver's Arrow ingest; *unlogged*: UNLOGGED then `SET LOGGED` after the index),
  then `CREATE INDEX` on (key, run_id). No ledger, no exactly-once, no rejects. `e2e_vs_simple` is
  against the best of them; each one's COPY + index time is also a write ceiling (`ceiling_write_*`).
* **small_beam_cold / _warm**: `predcache run` over one real day (945 rows), twice: the fixed cost.
* **ceiling_read**: pyarrow's threaded dataset scanner reading the key + input columns.
* **ceiling_flights_int8/fp32_Nt** and **ceiling_heavy_...**: raw onnxruntime in one process, N intra-op
  threads, batches of 8,192 valid rows (validated with `core.validate`, fed with `core.model.to_feed`
  outside the clock); only `session.run` is timed. *heavy* is the same pipeline with three hidden layers
  of 512 (built at bench time by the flights recipe, short training), to show what int8 buys when
  MatMuls dominate.
* **ceiling_write**: our writer alone: `store.writer.write_shard` per shard of the same plan (COPY into
  the version's partition, shard marker in the same transaction), then `ledger.attach_partition`
  (the same two indexes as ours); predictions computed before the clock.

`e2e_vs_ceiling` = ours / the slowest of the read, model-int8 and best write ceilings at that size (the
stages run one after another in one process; the pipeline overlaps them on 2 cores, so 1.0 is not a
hard bound). `vs_peer` = ours / the peer on the same engine. Profiles of our run: see
[PROFILE.md](PROFILE.md).
"""


def _n(value: Any, digits: int = 0) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and digits:
        return f"{value:,.{digits}f}"
    return f"{value:,.0f}" if isinstance(value, int | float) else str(value)


def _merged(config: dict[str, Any]) -> list[str]:
    later = config.get("appended")
    if not later:
        return []
    what = ", ".join(later["scenarios"])
    sizes = ", ".join(f"{n:,}" for n in later["rows"])
    return [f"* **Merged:** {what} at {sizes} rows: a later run (`BENCH_APPEND=1`); the rest: one run"]


def _header(document: dict[str, Any]) -> list[str]:
    m, v, db = document["machine"], document["versions"], document["database"]
    return [
        "# predcache benchmarks: ours vs peers vs physical ceilings",
        "",
        f"Generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by `make bench` "
        f"(`BENCH_ROWS={','.join(map(str, document['config']['rows']))}`).",
        "",
        f"* **Machine:** {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM ({m['os']}); "
        f"load average at start {m.get('load_at_start', '?')} (shared: each scenario records its own)",
        f"* **Versions:** Python {v['python']}, onnxruntime {v['onnxruntime']}, "
        f"Apache Beam {v['apache-beam']}, "
        f"PySpark {v['pyspark']}, pyarrow {v['pyarrow']}, psycopg {v['psycopg']}, PostgreSQL {v['postgres']}",
        f"* **Database:** {db['how']}; a fresh database per scenario",
        *_merged(document["config"]),
        f"* **Self-checks:** {'all passed' if document['self_checks_passed'] else 'SOME FAILED (see below)'}",
        "",
        f"![throughput by scenario and input size]({document.get('_plot', 'throughput.png')})",
        "",
    ]


def _headline(document: dict[str, Any]) -> list[str]:
    e2e, peers = document["e2e_rows_per_s"], document["peer_rows_per_s"]
    ceil, ratio, vs_peer = document["ceiling_rows_per_s"], document["e2e_vs_ceiling"], document["vs_peer"]
    rss = document["peak_rss_mb"]
    lines = [
        "## Throughput (input rows/s) and ratios",
        "",
        "| rows | ours beam | ours spark | simple | peer beam | peer spark | read | model int8 | write | "
        "beam / simple | spark / simple | beam / ceiling | spark / ceiling | beam / peer | spark / peer | "
        "RSS beam MB | RSS spark MB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n in map(str, document["config"]["rows"]):
        cells = [
            e2e.get("beam", {}).get(n),
            e2e.get("spark", {}).get(n),
            document.get("simple_rows_per_s", {}).get(n),
            peers.get("beam", {}).get(n),
            peers.get("spark", {}).get(n),
            ceil.get("read", {}).get(n),
            ceil.get("model_int8", {}).get(n),
            ceil.get("write", {}).get(n),
        ]
        vs_simple = document.get("e2e_vs_simple", {})
        ratios = [
            vs_simple.get("beam", {}).get(n),
            vs_simple.get("spark", {}).get(n),
            ratio.get("beam", {}).get(n),
            ratio.get("spark", {}).get(n),
            vs_peer.get("beam", {}).get(n),
            vs_peer.get("spark", {}).get(n),
        ]
        mem = [rss.get("beam", {}).get(n), rss.get("spark", {}).get(n)]
        row = [f"{int(n):,}", *(_n(c) for c in cells), *(_n(r, 2) for r in ratios), *(_n(m) for m in mem)]
        lines.append("| " + " | ".join(row) + " |")
    return [*lines, ""]


def _targets(document: dict[str, Any]) -> list[str]:
    lines = ["## Targets (reported, not asserted; per size where the issue gives one)", ""]
    lines += ["| target | engine | measured | goal | met |", "|---|---|---:|---:|:---:|"]
    for name, item in document["targets"].items():
        at_most = name.startswith(("rss_growth", "small_run"))
        goal = f"≤ {item['target']}" if at_most else f"≥ {item['target']}"
        met = "yes" if item["met"] else "**no**"
        value = f"{item['value']:,}" if isinstance(item["value"], int) else f"{item['value']:.3f}"
        lines.append(f"| {name} | {item.get('engine', '')} | {value} | {goal} | {met} |")
    speed = document["int8_speedup"]
    if speed:
        lines += ["", "int8 / fp32 throughput in the model ceiling (best thread count each):", ""]
        for model, by_size in speed.items():
            if not by_size:
                continue
            label = "flights_delay" if model == "model" else "heavy MLP (3 x 512)"
            lines.append(f"* {label}: " + ", ".join(f"{int(n):,} rows: {v:.2f}x" for n, v in by_size.items()))
    for engine, entry in document.get("fixed_cost", {}).items():
        per_row = entry.get("per_million_rows_seconds")
        lines += [
            "",
            f"Fixed cost ({engine}): a warm one-day run ({entry['one_day_rows']:,} rows, plan to verify) "
            f"takes {entry['warm_seconds']:.1f} s"
            + (
                f"; beyond it, {per_row:.1f} s per million rows (at {entry['at_rows']:,})."
                if per_row
                else "."
            ),
        ]
    for item in document["skipped"]:
        lines += ["", f"Skipped **{item['scenario']}**: {item['reason']}"]
    return [*lines, ""]


def _phases(document: dict[str, Any]) -> list[str]:
    """Where the wall time of our runs goes (seconds), from the run ledger's timestamps."""
    from benchmarks.scenarios import PHASES

    runs = [r for r in document["scenarios"] if r["scenario"].startswith("ours_") and r.get("phases")]
    if not runs:
        return []
    lines = ["## Where our wall time goes (seconds, from the run ledger)", ""]
    lines += [
        "| run | rows | total | " + " | ".join(PHASES) + " |",
        "|---|---:|---:|" + "---:|" * len(PHASES),
    ]
    for r in runs:
        cells = [f"{r['phases'].get(name, 0):,.1f}" for name in PHASES]
        lines.append(f"| {r['scenario']} | {r['rows']:,} | {r['seconds']:,.1f} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _all(document: dict[str, Any]) -> list[str]:
    lines = ["## Every scenario", ""]
    lines += [
        "| scenario | rows | seconds | rows/s | peak RSS MB | load | self-check |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in document["scenarios"]:
        check = "passed" if r["ok"] else "FAILED: " + "; ".join(r["problems"])[:300].replace("|", "/")
        lines.append(
            f"| {r['scenario']} | {r['rows']:,} | {r['seconds']:,.1f} | {_n(r['rows_per_s'])} | "
            f"{_n(r['peak_rss_mb'])} | {_n(r.get('load_1m'), 1)} | {check} |"
        )
    return [*lines, ""]


def results_markdown(document: dict[str, Any], plot_name: str) -> str:
    document = {**document, "_plot": plot_name}
    return "\n".join(
        [
            *_header(document),
            *_headline(document),
            *_targets(document),
            *_phases(document),
            *_all(document),
            METHOD,
        ]
    )
