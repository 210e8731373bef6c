"""The benchmark harness end to end on a tiny input, cheap scenarios only (no Spark, no heavy model)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
ROWS = "5000"
CHEAP_SCENARIOS = "read,model,write,simple,ours_beam,peer_beam"


def _checks() -> Any:
    """benchmarks/checks.py (benchmarks/ is not an installed package)."""
    spec = importlib.util.spec_from_file_location("bench_checks", REPO / "benchmarks" / "checks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module through sys.modules
    spec.loader.exec_module(module)
    return module


def test_self_check_rejects_a_score_one_bit_off_or_a_missing_key() -> None:
    checks = _checks()
    ref = checks.Reference(rows_in=1, rows_valid=1, sample={"k": (np.float32(0.5), 1)})
    one_bit_off = float(np.nextafter(np.float32(0.5), np.float32(1)))
    assert checks.compare_sample(ref, {"k": (0.5, 1)}) == []
    assert checks.compare_sample(ref, {"k": (one_bit_off, 1)})
    assert checks.compare_sample(ref, {"k": (0.5, 0)})
    assert checks.compare_sample(ref, {})


@pytest.fixture(scope="module")
def bench_out(pg_server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bench")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREDCACHE_", "BENCH_"))}
    env.update(
        PREDCACHE_DATABASE_URL=pg_server_url,
        BENCH_ROWS=ROWS,
        BENCH_SCENARIOS=CHEAP_SCENARIOS,
        BENCH_OUT_DIR=str(root / "out"),
        BENCH_WORK_DIR=str(root / "work"),
    )
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.run"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return root / "out"


@pytest.fixture(scope="module")
def results(bench_out: Path) -> dict[str, Any]:
    return dict(json.loads((bench_out / "results.json").read_text()))


@pytest.mark.slow
def test_every_scenario_passed_its_self_check(results: dict[str, Any]) -> None:
    assert results["self_checks_passed"] is True
    assert {r["scenario"] for r in results["scenarios"]} >= {
        "ceiling_read",
        "ceiling_write",
        "ours_beam",
        "peer_beam",
        "simple_csv",
        "simple_binary",
        "ceiling_write_binary",
    }


@pytest.mark.slow
def test_results_hold_rates_and_ratios_per_engine_and_size(results: dict[str, Any]) -> None:
    assert results["e2e_rows_per_s"]["beam"][ROWS] > 0
    assert set(results["ceiling_rows_per_s"]) >= {"read", "model_int8", "model_fp32", "write"}
    assert results["e2e_vs_ceiling"]["beam"][ROWS] > 0
    assert results["vs_peer"]["beam"][ROWS] > 0
    assert results["peak_rss_mb"]["beam"][ROWS] > 0
    assert results["simple_rows_per_s"][ROWS] > 0 and results["e2e_vs_simple"]["beam"][ROWS] > 0
    assert results["targets"][f"e2e_vs_simple_beam_{ROWS}"]["target"] == 0.5  # a goal per size
    assert results["targets"][f"vs_peer_beam_{ROWS}"]["target"] == 2.0


@pytest.mark.slow
def test_report_plot_and_machine_facts_are_written(bench_out: Path, results: dict[str, Any]) -> None:
    markdown = (bench_out / "RESULTS.md").read_text()
    assert "onnxruntime" in markdown and "PostgreSQL" in markdown and "| ours_beam |" in markdown
    assert (bench_out / "throughput.png").read_bytes().startswith(b"\x89PNG")
    assert results["machine"]["cores"] >= 1 and results["versions"]["postgres"]
