"""Peak memory of a model import against its calibration rows, on a model with wide activations.

The model is an skl2onnx ``MLPRegressor`` with hidden layers (512, 512), exported with the
exporter's defaults; the calibration file holds ``FEATURES`` float columns stacked into the graph
input, written with pyarrow's defaults (one row group). Two workloads, each in its own process:

* ``import``: ``predcache models import`` (MinMax calibration, the gate, reference statistics);
* ``calibrate``: the int8 quantization alone with Percentile calibration, the method whose
  calibrator keeps the activations themselves (see ``pipelines/modeling/quantize.py``).

A process's peak RSS is its kernel high-water mark (``os.wait4``), not a sampled figure: a sampler
can miss a short peak, the kernel cannot. Run ``python -m benchmarks.calibration_memory [ROWS ...]``
(default 10,000 and 100,000 rows); it prints one JSON object with rows, peak RSS and seconds of
each run, and the load average. ``tests/modeling/test_calibration_memory.py`` asserts on the same
measurements.

Measured on 2 shared cores (load average 5), peak RSS / wall seconds:

=========================  ================  ================  ===================================
workload                   10,000 rows       100,000 rows      before the strides
=========================  ================  ================  ===================================
import (MinMax)            385 MB / 7.1 s    474 MB / 9.9 s    392 / 501 MB, but 8 of 88 batches
                                                               calibrated
calibrate (Percentile)     357 MB / 2.9 s    421 MB / 8.2 s    failed; 373 / 1,532 MB on 10,240 /
                                                               102,400 rows
=========================  ================  ================  ===================================
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

HIDDEN_LAYERS = (512, 512)
HIDDEN = max(HIDDEN_LAYERS)
FEATURES = 16
TRAIN_ROWS = 2_000
KEY = "id"
INPUT = "X"
DEFAULT_ROWS = (10_000, 100_000)
#: Tensors per row of ``HIDDEN`` floats that a calibrator keeping activations would keep: the two
#: MatMul outputs and the two Relu outputs feeding the next MatMul (the 16-wide input and the
#: one-wide last MatMul output are left out).
WIDE_ACTIVATIONS = 2 * len(HIDDEN_LAYERS)
REPO = Path(__file__).resolve().parent.parent


def feature_names() -> list[str]:
    return [f"f{i}" for i in range(FEATURES)]


def rows(count: int, *, seed: int) -> pa.Table:
    """``count`` rows: a unique string key, ``FEATURES`` float64 columns and a float ``target``."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(count, FEATURES))
    target = x[:, 0] - 0.5 * x[:, 1] + 0.1 * rng.normal(size=count)
    columns = {name: pa.array(x[:, i]) for i, name in enumerate(feature_names())}
    keys = pa.array(np.char.add("k", np.arange(count).astype(str)))
    return pa.table({KEY: keys, **columns, "target": pa.array(target)})


def write_rows(path: Path, count: int, *, seed: int = 0) -> Path:
    pq.write_table(rows(count, seed=seed), path)
    return path


def build_model(path: Path) -> Path:
    """Train the wide MLP briefly (accuracy is not the point) and export it with skl2onnx's defaults."""
    from skl2onnx import to_onnx
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPRegressor

    train = rows(TRAIN_ROWS, seed=1)
    x = np.column_stack([train[name].to_numpy() for name in feature_names()]).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = MLPRegressor(hidden_layer_sizes=HIDDEN_LAYERS, max_iter=3, random_state=0)
        model.fit(x, train["target"].to_numpy())
    path.write_bytes(to_onnx(model, x[:1]).SerializeToString())
    return path


def activation_bytes(rows: int) -> int:
    """What keeping the wide activations (float32) of ``rows`` rows costs."""
    return rows * HIDDEN * 4 * WIDE_ACTIVATIONS


@dataclass(frozen=True)
class Run:
    """One measured process: its exit code, output, peak RSS and wall time."""

    returncode: int
    output: str
    peak_rss_bytes: int
    seconds: float


#: Forks and execs the command, then writes its rusage peak (KiB) to the file named first. Linux
#: keeps a process's RSS high-water mark across fork and exec (``signal->maxrss``): a child started
#: straight from a large process (a pytest session past 1 GB) reports that process's peak as its
#: own. This launcher is small, so the command's peak starts from a few MB.
_LAUNCHER = (
    "import os, sys\n"
    "pid = os.fork()\n"
    "if pid == 0:\n"
    "    os.execvp(sys.argv[2], sys.argv[2:])\n"
    "_, status, usage = os.wait4(pid, 0)\n"
    "with open(sys.argv[1], 'w') as out:\n"
    "    out.write(str(usage.ru_maxrss))\n"
    "sys.exit(os.waitstatus_to_exitcode(status))\n"
)


def measured(command: list[str], *, env: dict[str, str]) -> Run:
    """Run ``command`` from the repository and return its exit, output, peak RSS and seconds.

    The command runs under a small launcher (``_LAUNCHER``) that reaps it with ``os.wait4`` and
    records its ``ru_maxrss``: the command's own peak, whatever process started the measurement.
    """
    with tempfile.TemporaryFile() as output, tempfile.TemporaryDirectory() as folder:
        peak = Path(folder) / "peak_kib"
        started = time.perf_counter()
        child = subprocess.run(
            [sys.executable, "-c", _LAUNCHER, str(peak), *command],
            stdout=output,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO,
            check=False,
        )
        seconds = time.perf_counter() - started
        output.seek(0)
        text = output.read().decode(errors="replace")
        kib = int(peak.read_text()) if peak.exists() else 0
    return Run(child.returncode, text, kib * 1024, seconds)


def child_env(models_dir: Path, home: Path) -> dict[str, str]:
    """This environment without predcache settings, plus its own models folder and home."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREDCACHE_")}
    env.update(PREDCACHE_MODELS_DIR=str(models_dir), PREDCACHE_HOME=str(home))
    return env


def import_command(name: str, onnx_path: Path, calibration: Path) -> list[str]:
    """``predcache models import`` of the wide model, true targets as labels (the gate's RMSE)."""
    return [
        *(sys.executable, "-m", "pipelines.cli", "models", "import", name),
        *("--onnx", str(onnx_path), "--key", KEY, "--calibration", str(calibration)),
        *("--columns", f"{INPUT}={','.join(feature_names())}", "--label-column", "target"),
    ]


def calibrate_command(onnx_path: Path, calibration: Path, *, method: str) -> list[str]:
    """This module's ``calibrate`` mode: quantize the wide model with ``method`` on the file's rows."""
    return [
        *(sys.executable, "-m", "benchmarks.calibration_memory", "calibrate"),
        *(str(onnx_path), str(calibration), "--method", method),
    ]


def calibrate(onnx_path: Path, calibration: Path, *, method: str) -> dict[str, object]:
    """Validate the file's rows as an import does and quantize the model on them (no gate)."""
    from pipelines.core.card import Card, InputSpec
    from pipelines.modeling.quantize import QuantSettings, quantize_model
    from pipelines.modeling.rows import usable_rows

    spec = InputSpec(name=INPUT, dtype="float32", shape=["N", FEATURES], columns=feature_names())
    card = Card(name="wide", version="1", key=KEY, inputs=[spec], outputs=[], signatures={}, artifacts={})
    table, _ = usable_rows(calibration, card, label_column=None, what="calibration")
    settings = QuantSettings(calibrate_method=method, per_channel=False)  # type: ignore[arg-type]
    with tempfile.TemporaryDirectory(prefix="calibration-memory-") as scratch:
        report = quantize_model(onnx_path, Path(scratch) / "model.int8.onnx", card, table, settings)
    return dict(report["calibration"])


def run(row_counts: list[int], work: Path) -> dict[str, object]:
    """Import and calibrate once per row count; every run must succeed before a figure is reported."""
    onnx_path = build_model(work / "wide_mlp.onnx")
    env = child_env(work / "models", work / "home")
    results = []
    for count in row_counts:
        calibration = write_rows(work / f"calibration_{count}.parquet", count)
        commands = {
            "import (MinMax)": import_command(f"wide_{count}", onnx_path, calibration),
            "calibrate (Percentile)": calibrate_command(onnx_path, calibration, method="Percentile"),
        }
        for workload, command in commands.items():
            done = measured(command, env=env)
            if done.returncode != 0:
                raise RuntimeError(f"{workload} of {count} rows failed: {done.output[-2000:]}")
            results.append(
                {
                    "workload": workload,
                    "rows": count,
                    "peak_rss_mb": round(done.peak_rss_bytes / 2**20, 1),
                    "seconds": round(done.seconds, 2),
                    "activations_of_all_rows_mb": round(activation_bytes(count) / 2**20, 1),
                }
            )
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    return {
        "scenario": "calibration_memory",
        "model": f"MLPRegressor{HIDDEN_LAYERS} via skl2onnx, {FEATURES} features",
        "runs": results,
        "load_average": load,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    commands = parser.add_subparsers(dest="command")
    measure = commands.add_parser("measure", help="measure every workload (the default)")
    measure.add_argument("rows", nargs="*", type=int, default=list(DEFAULT_ROWS))
    one = commands.add_parser("calibrate", help="one calibration, in this process")
    one.add_argument("onnx", type=Path)
    one.add_argument("calibration", type=Path)
    one.add_argument("--method", default="MinMax", choices=["MinMax", "Percentile", "Entropy"])
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv if argv[:1] in (["measure"], ["calibrate"]) else ["measure", *argv])
    if args.command == "calibrate":
        print(json.dumps(calibrate(args.onnx, args.calibration, method=args.method)), flush=True)
        return 0
    with tempfile.TemporaryDirectory(prefix="calibration-memory-") as work:
        print(json.dumps(run(args.rows, Path(work))), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
