"""An import's peak memory does not grow with its calibration rows, on a model with wide activations.

The model (``benchmarks/calibration_memory.py``) is an skl2onnx MLPRegressor with hidden layers
(512, 512): four tensors of 512 floats per row that a calibrator could keep (two MatMul outputs,
two Relu outputs), 8 KiB a row. Each workload runs in its own process, once on 10,000 and once on
100,000 rows, and the 100k run's peak RSS (the kernel's high-water mark) must stay within
``MAX_RATIO`` of the 10k run's.

Why that bound cannot pass by accident: the 10k runs peak near 400 MB, so 1.5x allows 200 MB more,
while keeping the activations of the extra rows (82,000 calibrated rows for the import, 90,000 for
the calibration) would add 640-700 MB, and keeping even half of them 320 MB. Each test also checks
that arithmetic on the measured figures, so a larger base (a heavier interpreter) cannot loosen it.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from pipelines.core.card import load_card
from pipelines.modeling.importer import HOLDOUT_FRACTION, MAX_HOLDOUT_ROWS

REPO = Path(__file__).resolve().parents[2]
SMALL, LARGE = 10_000, 100_000
#: Whole batches of 1,024 rows: before the strides, Percentile failed on any other count, and on
#: these it peaked at 373 MB (10,240 rows) and 1,532 MB (102,400 rows).
PERCENTILE_SMALL, PERCENTILE_LARGE = 10 * 1_024, 100 * 1_024
MAX_RATIO = 1.5


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    """benchmarks/calibration_memory.py (benchmarks/ is not an installed package)."""
    path = REPO / "benchmarks" / "calibration_memory.py"
    spec = importlib.util.spec_from_file_location("bench_calibration_memory", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def work(bench: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("calibration_memory")
    bench.build_model(folder / "wide.onnx")
    for rows in (SMALL, LARGE, PERCENTILE_SMALL, PERCENTILE_LARGE):
        bench.write_rows(folder / f"calibration_{rows}.parquet", rows)
    return folder


def calibrated_rows(rows: int) -> int:
    """Rows an import calibrates on when the holdout is taken from its calibration file."""
    return rows - min(MAX_HOLDOUT_ROWS, int(rows * HOLDOUT_FRACTION))


def assert_bounded(bench: ModuleType, peaks: dict[int, int], *, extra_rows: int) -> None:
    """The larger run's peak (bytes) stays within MAX_RATIO of the smaller's, a bound that keeping
    half of the extra rows' activations would break."""
    (small_rows, small), (large_rows, large) = sorted(peaks.items())
    keeping_half = bench.activation_bytes(extra_rows) / 2
    assert (MAX_RATIO - 1) * small < keeping_half, "the bound no longer tells bounded from unbounded"
    assert large <= MAX_RATIO * small, (
        f"peak RSS {large / 2**20:.0f} MB on {large_rows:,} rows vs {small / 2**20:.0f} MB on "
        f"{small_rows:,}: more than {MAX_RATIO}x; memory grows with the calibration rows"
    )


@pytest.mark.slow
def test_import_of_100k_calibration_rows_peaks_within_1_5x_of_10k(bench: ModuleType, work: Path) -> None:
    env = bench.child_env(work / "models", work / "home")
    peaks = {}
    for rows in (SMALL, LARGE):
        calibration = work / f"calibration_{rows}.parquet"
        command = bench.import_command(f"wide_{rows}", work / "wide.onnx", calibration)
        done = bench.measured(command, env=env)
        assert done.returncode == 0, done.output[-3000:]
        peaks[rows] = done.peak_rss_bytes
    card = load_card(work / "models" / f"wide_{LARGE}" / "1")
    assert card.training["calibration_rows"] == calibrated_rows(LARGE) == 90_000
    assert card.quantization["calibration"]["rows"] == calibrated_rows(LARGE)
    extra = calibrated_rows(LARGE) - calibrated_rows(SMALL)
    assert_bounded(bench, peaks, extra_rows=extra)


@pytest.mark.slow
def test_percentile_calibration_of_102k_rows_peaks_within_1_5x_of_10k(bench: ModuleType, work: Path) -> None:
    # Percentile keeps the activations themselves (MinMax keeps two numbers per tensor): the strides bound it.
    env = bench.child_env(work / "models", work / "home")
    peaks = {}
    for rows in (PERCENTILE_SMALL, PERCENTILE_LARGE):
        command = bench.calibrate_command(
            work / "wide.onnx", work / f"calibration_{rows}.parquet", method="Percentile"
        )
        done = bench.measured(command, env=env)
        assert done.returncode == 0, done.output[-3000:]
        assert f'"rows": {rows}' in done.output.splitlines()[-1]
        peaks[rows] = done.peak_rss_bytes
    assert_bounded(bench, peaks, extra_rows=PERCENTILE_LARGE - PERCENTILE_SMALL)
