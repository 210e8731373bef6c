"""`predcache evaluate`, `report` and `alerts check` as users run them: output, one-line errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import subprocess_env
from tests.monitoring.conftest import ToyCache


def _cli(cache: ToyCache, *args: str) -> subprocess.CompletedProcess[str]:
    env = subprocess_env(
        cache.url, cache.folder / "home", PREDCACHE_MODELS_DIR=str(cache.settings.models_dir)
    )
    return subprocess.run(
        [sys.executable, "-m", "pipelines.cli", *args], env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["evaluate", "--model", "nope"], "unknown model 'nope'"),
        (["evaluate", "--model", "toy", "--since", "2013-07-02", "--until", "2013-07-01"], "is before"),
        (["report", "--model", "nope", "--out", "/tmp"], "unknown model 'nope'"),
    ],
)
def test_bad_requests_are_one_line_and_exit_2(toy_cache: ToyCache, args: list[str], fragment: str) -> None:
    done = _cli(toy_cache, *args)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and fragment in lines[0], done.stderr


def test_report_and_alerts_check_say_what_they_did(toy_cache: ToyCache) -> None:
    out = toy_cache.folder / "report"
    report = _cli(toy_cache, "report", "--model", "toy", "--out", str(out))
    check = _cli(toy_cache, "alerts", "check", "--model", "toy")
    assert report.returncode == 0 and (out / "report.html").is_file(), report.stderr
    assert check.returncode == 0 and "new alert(s) for toy" in check.stdout, check.stderr
