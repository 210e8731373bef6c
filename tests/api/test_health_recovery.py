"""/healthz follows the database: 503 while it is stopped, 200 again once it is back, no restart.

Uses a PostgreSQL of its own (embedded, in a temp dir) so stopping it disturbs nobody.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pipelines.api import create_app
from pipelines.store.db import migrate
from pipelines.store.embedded import EmbeddedServer

RECOVERY_TIMEOUT_S = 60.0


@pytest.fixture()
def own_server(tmp_path: Path) -> Iterator[Any]:
    """An embedded PostgreSQL we may stop and start (deleted afterwards)."""
    server = EmbeddedServer(tmp_path / "pg")
    server.start()
    try:
        yield server
    finally:
        server.cleanup(delete=True)


def _health(client: httpx.Client) -> httpx.Response:
    return client.get("/healthz")


def test_healthz_is_503_while_the_database_is_down_and_recovers_without_restart(
    own_server, make_api_settings, serve_app, tmp_path
) -> None:
    url = str(own_server.get_uri())
    migrate(url)
    app = create_app(make_api_settings(url, tmp_path / "home"), pool_size=2)
    with serve_app(app) as base, httpx.Client(base_url=base, timeout=30) as client:
        assert _health(client).status_code == 200
        own_server.stop()
        down = _health(client)
        assert down.status_code == 503 and down.json()["error"] == {
            "code": "UNAVAILABLE",
            "message": "the cache database is unavailable; retry shortly",  # no driver text, no socket path
        }
        own_server.start()
        deadline = time.monotonic() + RECOVERY_TIMEOUT_S
        while (up := _health(client)).status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert up.status_code == 200
        assert client.get("/v1/models").json() == {"models": []}
