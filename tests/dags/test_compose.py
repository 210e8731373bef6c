"""docker-compose.yml and the Dockerfile hold together (no Docker engine needed: the files are read)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
IMAGE = "predcache:latest"
ONE_SHOT = {"predcache-init", "airflow-init"}
EXPECTED = {
    "cache-db", "airflow-db", "predcache-init", "airflow-init", "airflow-api-server", "airflow-scheduler",
    "airflow-dag-processor", "airflow-triggerer", "spark-master", "spark-worker", "api",
}  # fmt: skip
ENTRY_POINTS = {"airflow", "predcache", "spark-class", "sh"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def _env(service: dict[str, Any]) -> dict[str, str]:
    return service.get("environment") or {}


def test_stack_has_cache_airflow_spark_and_api_services(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == EXPECTED


def test_every_service_has_an_image_and_ours_share_one_built_from_the_repo(
    services: dict[str, dict[str, Any]],
) -> None:
    built = [name for name, s in services.items() if "build" in s]
    assert built == ["predcache-init"] and services["predcache-init"]["build"] == "."
    assert (REPO / "Dockerfile").is_file()
    ours = {name for name, s in services.items() if s["image"] == IMAGE}
    assert ours == EXPECTED - {"cache-db", "airflow-db"}
    assert all(services[name]["image"].startswith("postgres:") for name in ("cache-db", "airflow-db"))


def test_commands_start_with_a_program_the_image_has(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        if service["image"] == IMAGE:
            assert service["command"][0] in ENTRY_POINTS, name


def test_bind_mounts_point_at_files_in_the_repo(services: dict[str, dict[str, Any]]) -> None:
    sources = {v.split(":")[0] for s in services.values() for v in s.get("volumes", []) if v.startswith(".")}
    assert sources == {"./dags", "./models"}
    assert all((REPO / source).is_dir() for source in sources)
    assert (REPO / "dags" / "predcache_dags.yaml").is_file()


def test_long_running_services_have_healthchecks(services: dict[str, dict[str, Any]]) -> None:
    for name in EXPECTED - ONE_SHOT:
        assert services[name]["healthcheck"]["test"], name


def test_depends_on_names_existing_services_with_valid_conditions(
    services: dict[str, dict[str, Any]],
) -> None:
    conditions = {"service_started", "service_healthy", "service_completed_successfully"}
    for name, service in services.items():
        for target, how in (service.get("depends_on") or {}).items():
            assert target in services and target != name, (name, target)
            assert how["condition"] in conditions
            if how["condition"] == "service_healthy":
                assert "healthcheck" in services[target], target


def test_cache_and_airflow_metadata_use_separate_databases(services: dict[str, dict[str, Any]]) -> None:
    scheduler = _env(services["airflow-scheduler"])
    assert "@cache-db:" in scheduler["PREDCACHE_DATABASE_URL"]
    assert "@airflow-db:" in scheduler["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]


def test_predcache_services_share_the_same_settings(services: dict[str, dict[str, Any]]) -> None:
    # Not "api": it gets only the reader's login (tests/api/test_exposure.py).
    users = ["predcache-init", "airflow-scheduler", "airflow-api-server", "spark-worker"]
    settings = [{k: v for k, v in _env(services[n]).items() if k.startswith("PREDCACHE_")} for n in users]
    assert all(s == settings[0] for s in settings)
    assert settings[0]["PREDCACHE_SPARK_MASTER"] == "spark://spark-master:7077"


def test_airflow_components_run_local_executor_with_one_jwt_secret(
    services: dict[str, dict[str, Any]],
) -> None:
    components = ["airflow-api-server", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer"]
    assert {services[n]["command"][1] for n in components} == {
        "api-server",
        "scheduler",
        "dag-processor",
        "triggerer",
    }
    envs = [_env(services[n]) for n in components]
    assert {e["AIRFLOW__CORE__EXECUTOR"] for e in envs} == {"LocalExecutor"}
    assert len({e["AIRFLOW__API_AUTH__JWT_SECRET"] for e in envs}) == 1
    assert {e["AIRFLOW__CORE__DAGS_FOLDER"] for e in envs} == {"/opt/predcache/dags"}


def test_lookup_api_listens_on_all_interfaces(services: dict[str, dict[str, Any]]) -> None:
    command = services["api"]["command"]
    assert command[:2] == ["predcache", "serve"] and command[command.index("--host") + 1] == "0.0.0.0"


def test_dockerfile_is_python_311_slim_with_java_17_and_the_extras() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim", dockerfile, re.M)
    assert "openjdk-17-jre-headless" in dockerfile
    assert '[spark,airflow,api]"' in dockerfile
    for line in re.findall(r"^COPY (.+)$", dockerfile, re.M):
        if line.startswith("--from="):
            continue
        *sources, _target = line.split()
        assert all((REPO / source).exists() for source in sources), line


def test_dockerfile_builds_the_wheel_in_one_stage_and_installs_it_in_the_next() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    stages = re.findall(r"^FROM (\S+)(?: AS (\w+))?$", dockerfile, re.M)
    assert len(stages) == 2 and stages[0][1] and not stages[1][1]
    build, runtime = dockerfile.split("\nFROM ")[1:]
    assert "pip wheel --no-deps" in build
    assert "COPY setup.py MANIFEST.in README.md" in build
    assert f"COPY --from={stages[0][1]} " in runtime and "predcache-*.whl" in runtime
    assert "pip install -e" not in dockerfile and "COPY pipelines/" not in runtime
