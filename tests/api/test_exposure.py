"""Safe defaults of `predcache serve`: no anonymous network exposure, no driver text in 503s, compose keys."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipelines.api.errors import status_of
from pipelines.api.server import check_exposure, is_loopback
from pipelines.cli import main
from pipelines.errors import ConfigError, StoreError

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "[::1]", "localhost", "127.0.0.2"])
def test_loopback_hosts_are_recognised(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10"])
def test_network_hosts_are_not_loopback(host: str) -> None:
    assert not is_loopback(host)


def test_serving_a_network_host_without_api_keys_is_refused_unless_anonymous_is_allowed() -> None:
    with pytest.raises(ConfigError, match="--allow-anonymous"):
        check_exposure("0.0.0.0", api_keys=" , ", allow_anonymous=False)
    check_exposure("0.0.0.0", api_keys="k1", allow_anonymous=False)
    check_exposure("0.0.0.0", api_keys="", allow_anonymous=True)
    check_exposure("127.0.0.1", api_keys="", allow_anonymous=False)


def test_serve_cli_refuses_0_0_0_0_without_keys_before_touching_the_database(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("PREDCACHE_API_KEYS", "")
    monkeypatch.setenv("PREDCACHE_DATABASE_URL", "postgresql://nobody@192.0.2.1:1/none")
    monkeypatch.setenv("PREDCACHE_HOME", str(tmp_path))
    assert main(["serve", "--host", "0.0.0.0"]) == 2
    assert "refusing to serve on 0.0.0.0 without API keys" in capsys.readouterr().err


def test_503_body_carries_no_driver_text() -> None:
    exc = StoreError(
        'the cache database is unavailable (connection to server on socket "/tmp/x/.s.PGSQL.5432" failed: '
        'FATAL: role "predcache_api" does not exist); retry shortly'
    )
    assert status_of(exc) == (503, "UNAVAILABLE", "the cache database is unavailable; retry shortly")


def test_compose_api_requires_a_key_and_logs_in_as_the_api_role_only() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    api = compose["services"]["api"]
    env = api["environment"]
    assert "PREDCACHE_DATABASE_URL" not in env  # never the owner's credentials
    assert env["PREDCACHE_API_DATABASE_URL"].startswith("postgresql://predcache_api:")
    assert env["PREDCACHE_API_KEYS"].split(":-", 1)[1].rstrip("}")  # a key even with nothing configured
    assert "--allow-anonymous" not in api["command"]
    assert compose["services"]["predcache-init"]["environment"]["PREDCACHE_API_DB_PASSWORD"]
