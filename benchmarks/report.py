"""The benchmark's outputs: the summary ratios, ``results.json``, ``RESULTS.md`` and ``throughput.png``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RESULTS_MD = "RESULTS.md"
RESULTS_JSON = "results.json"
PLOT_PNG = "throughput.png"
ENGINES = ("beam", "spark")
#: Stages of our pipeline whose slowest ceiling bounds it.
PIPELINE_STAGES = ("read", "model_int8", "write")
TARGETS = {
    "e2e_vs_ceiling_better_engine": 0.7,
    "e2e_vs_ceiling_other_engine": 0.5,
    "vs_peer": 2.0,
    "rss_growth_max": 1.3,  # issue 10: all processes of a run, at 10M vs 1M
    "heavy_int8_speedup": 1.5,
    "small_run_warm_seconds": 3.0,
}
#: e2e / the simple pipeline (best COPY method), by engine: (goal at <= 1M rows, goal above).
SIMPLE_TARGETS = {"beam": (0.5, 0.7), "spark": (0.35, 0.5)}
#: Sizes up to this use the first goal of SIMPLE_TARGETS.
SIMPLE_TARGET_SMALL_ROWS = 1_000_000
#: Peak RSS growth is judged at sizes up to this (vs the smallest size); larger runs must complete.
RSS_TARGET_MAX_ROWS = 10_000_000


def _rate(results: list[dict[str, Any]], scenario: str, rows: int) -> float | None:
    for result in results:
        if result["scenario"] == scenario and result["rows"] == rows and result["ok"]:
            return float(result["rows_per_s"])
    return None


def _best(results: list[dict[str, Any]], prefix: str, rows: int) -> float | None:
    rates = [
        float(r["rows_per_s"])
        for r in results
        if r["scenario"].startswith(prefix) and r["rows"] == rows and r["ok"] and r["rows_per_s"]
    ]
    return max(rates) if rates else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def _prune(table: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {k: {n: v for n, v in row.items() if v is not None} for k, row in table.items()}


def summarize(document: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers, per engine (and stage) and input size."""
    results = document["scenarios"]
    sizes = document["config"]["rows"]
    ceilings: dict[str, dict[str, float | None]] = {}
    for stage, prefix in (
        ("read", "ceiling_read"),
        ("model_int8", "ceiling_flights_int8_"),
        ("model_fp32", "ceiling_flights_fp32_"),
        ("heavy_int8", "ceiling_heavy_int8_"),
        ("heavy_fp32", "ceiling_heavy_fp32_"),
        ("write", "ceiling_write"),
    ):
        ceilings[stage] = {str(n): _best(results, prefix, n) for n in sizes}
    slowest = {
        str(n): min((v for s in PIPELINE_STAGES if (v := ceilings[s][str(n)]) is not None), default=None)
        for n in sizes
    }
    e2e = {e: {str(n): _rate(results, f"ours_{e}", n) for n in sizes} for e in ENGINES}
    peers = {e: {str(n): _rate(results, f"peer_{e}", n) for n in sizes} for e in ENGINES}
    rss = {
        e: {
            str(r["rows"]): r["peak_rss_mb"]
            for r in results
            if r["scenario"] == f"ours_{e}" and r["ok"] and r["peak_rss_mb"]
        }
        for e in ENGINES
    }
    growth = {
        e: {
            n: _ratio(by_size[n], by_size[str(min(map(int, by_size)))])
            for n in sorted(by_size, key=int)
            if int(n) != min(map(int, by_size))
        }
        for e, by_size in rss.items()
        if len(by_size) > 1
    }
    speedup = {
        model: {
            str(n): _ratio(ceilings[f"{model}_int8"][str(n)], ceilings[f"{model}_fp32"][str(n)])
            for n in sizes
        }
        for model in ("model", "heavy")
    }
    simple = {str(n): _best(results, "simple_", n) for n in sizes}
    summary = {
        "simple_rows_per_s": {n: v for n, v in simple.items() if v is not None},
        "e2e_vs_simple": _prune(
            {e: {str(n): _ratio(e2e[e][str(n)], simple[str(n)]) for n in sizes} for e in ENGINES}
        ),
        "fixed_cost": _fixed_cost(results, e2e),
        "e2e_rows_per_s": _prune(e2e),
        "peer_rows_per_s": _prune(peers),
        "ceiling_rows_per_s": _prune(ceilings),
        "slowest_stage_ceiling_rows_per_s": {n: v for n, v in slowest.items() if v is not None},
        "e2e_vs_ceiling": _prune(
            {e: {str(n): _ratio(e2e[e][str(n)], slowest[str(n)]) for n in sizes} for e in ENGINES}
        ),
        "vs_peer": _prune(
            {e: {str(n): _ratio(e2e[e][str(n)], peers[e][str(n)]) for n in sizes} for e in ENGINES}
        ),
        "peak_rss_mb": rss,
        "peak_rss_growth": growth,
        "int8_speedup": _prune(speedup),
        "self_checks_passed": bool(results) and all(r["ok"] for r in results),
    }
    summary["targets"] = _targets(summary)
    return summary


def _fixed_cost(results: list[dict[str, Any]], e2e: dict[str, dict[str, float | None]]) -> dict[str, Any]:
    """Per engine: the warm one-day run's seconds (fixed cost) and the per-million-row cost beyond it."""
    out: dict[str, Any] = {}
    for engine in ENGINES:
        warm = [r for r in results if r["scenario"] == f"small_{engine}_warm" and r["ok"]]
        if not warm:
            continue
        fixed = float(warm[0]["seconds"])
        entry: dict[str, Any] = {"one_day_rows": warm[0]["rows"], "warm_seconds": round(fixed, 2)}
        by_size = {n: v for n, v in e2e.get(engine, {}).items() if v}
        if by_size:
            n = max(map(int, by_size))
            total = n / float(by_size[str(n)])
            entry["per_million_rows_seconds"] = round((total - fixed) / n * 1e6, 2)
            entry["at_rows"] = n
        out[engine] = entry
    return out


def _largest(by_size: dict[str, Any]) -> Any:
    return by_size[str(max(map(int, by_size)))] if by_size else None


def _targets(summary: dict[str, Any]) -> dict[str, Any]:
    """Each target with the measured value and whether it is met: the issue's per-size goals at
    every size measured (e2e vs simple, vs the peer, RSS growth), the rest at the largest size."""
    ratios = {e: _largest(summary["e2e_vs_ceiling"].get(e, {})) for e in ENGINES}
    measured = {e: v for e, v in ratios.items() if v is not None}
    out: dict[str, Any] = {}
    if measured:
        better = max(measured, key=lambda e: measured[e])
        out["e2e_vs_ceiling_better_engine"] = {"engine": better, "value": measured[better]}
        others = [e for e in measured if e != better]
        if others:
            out["e2e_vs_ceiling_other_engine"] = {"engine": others[0], "value": measured[others[0]]}
    for engine in ENGINES:
        small, large = SIMPLE_TARGETS[engine]
        for n, value in sorted(summary["e2e_vs_simple"].get(engine, {}).items(), key=lambda i: int(i[0])):
            goal = small if int(n) <= SIMPLE_TARGET_SMALL_ROWS else large
            out[f"e2e_vs_simple_{engine}_{n}"] = {
                "engine": engine,
                "value": value,
                "rows": int(n),
                "target": goal,
            }
        for n, value in sorted(summary["vs_peer"].get(engine, {}).items(), key=lambda i: int(i[0])):
            out[f"vs_peer_{engine}_{n}"] = {
                "engine": engine,
                "value": value,
                "rows": int(n),
                "target": TARGETS["vs_peer"],
            }
        for n, value in summary["peak_rss_growth"].get(engine, {}).items():
            if value is not None and int(n) <= RSS_TARGET_MAX_ROWS:
                out[f"rss_growth_{engine}_{n}"] = {
                    "engine": engine,
                    "value": value,
                    "rows": int(n),
                    "target": TARGETS["rss_growth_max"],
                }
        completed = [int(n) for n in summary["e2e_rows_per_s"].get(engine, {})]
        if completed and max(completed) > RSS_TARGET_MAX_ROWS:
            largest = max(completed)
            out[f"completes_{engine}_{largest}"] = {"engine": engine, "value": largest, "target": largest}
    for engine, entry in summary["fixed_cost"].items():
        out[f"small_run_warm_seconds_{engine}"] = {
            "engine": engine,
            "value": entry["warm_seconds"],
            "target": TARGETS["small_run_warm_seconds"],
        }
    heavy = summary["int8_speedup"].get("heavy", {})
    if heavy:
        out["heavy_int8_speedup"] = {"value": _largest(heavy)}
    for name, item in out.items():
        target = item.setdefault("target", TARGETS.get(name))
        at_most = name.startswith(("rss_growth", "small_run"))
        item["met"] = item["value"] <= target if at_most else item["value"] >= target
    return out


def write_all(document: dict[str, Any], out_dir: Path) -> None:
    from benchmarks.markdown import results_markdown

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / RESULTS_JSON).write_text(json.dumps(document, indent=2) + "\n")
    plot(document, out_dir / PLOT_PNG)
    (out_dir / RESULTS_MD).write_text(results_markdown(document, PLOT_PNG))


PLOT_SERIES = (
    ("ours_beam", "predcache run (beam)", "-", "o"),
    ("ours_spark", "predcache run (spark)", "-", "s"),
    ("peer_beam", "peer: Beam RunInference + INSERT", "--", "o"),
    ("peer_spark", "peer: Spark predict_batch_udf + JDBC", "--", "s"),
    ("ceiling_read", "ceiling: read (pyarrow)", ":", "^"),
    ("ceiling_flights_int8", "ceiling: model int8 (onnxruntime)", ":", "v"),
    ("ceiling_write", "ceiling: write (COPY + index)", ":", "D"),
    ("simple_", "simple single-process pipeline (best COPY)", "-.", "*"),
)


def plot(document: dict[str, Any], path: Path) -> None:
    """Throughput (input rows/s) by scenario and input size, log-log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = document["scenarios"]
    sizes = document["config"]["rows"]
    fig, ax = plt.subplots(figsize=(11, 5.5), dpi=110)
    for prefix, label, style, marker in PLOT_SERIES:
        points = [(n, _best(results, prefix, n)) for n in sizes]
        points = [(n, v) for n, v in points if v]
        if points:
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, linestyle=style, marker=marker, label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("input rows")
    ax.set_ylabel("input rows per second (higher is better)")
    machine = document["machine"]
    ax.set_title(f"flights_delay int8, {machine['cores']} cores: ours vs peers vs ceilings")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
