"""The machine and the versions a benchmark ran with (printed at the top of RESULTS.md)."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from typing import Any

from benchmarks.common import server_version


def _lscpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return platform.processor() or "unknown"
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def load_average() -> str:
    """The machine's load average (1, 5, 15 min): timings on a shared machine need it beside them."""
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f}, {five:.2f}, {fifteen:.2f}"


def machine() -> dict[str, Any]:
    import psutil

    return {
        "cpu": _lscpu_model(),
        "cores": os.cpu_count(),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "load_at_start": load_average(),
    }


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def versions(database_url: str) -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "onnxruntime": _version("onnxruntime"),
        "apache-beam": _version("apache-beam"),
        "pyspark": _version("pyspark"),
        "pyarrow": _version("pyarrow"),
        "psycopg": _version("psycopg"),
        "postgres": server_version(database_url),
    }
