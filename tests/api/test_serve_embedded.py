"""`predcache serve` with zero set-up: the embedded server, the derived reader login, a clean stop."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

START_TIMEOUT_S = 90.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_serve_without_any_database_setting_reads_as_the_api_role_and_stops_its_server_on_sigterm() -> None:
    home = Path(tempfile.mkdtemp(prefix="predcache-serve-test-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREDCACHE_")}
    env.update(PREDCACHE_HOME=str(home))
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    pgdata = (home / "pg").resolve()
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
                break
            except httpx.TransportError:
                assert server.poll() is None and time.monotonic() < deadline, "serve did not start"
                time.sleep(0.5)
        assert health.json() == {"status": "ok"}
        assert (home / "api_db_password").stat().st_mode & 0o777 == 0o600
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=60) != -signal.SIGTERM  # exited, not killed: atexit hooks ran
        pgdata = (home / "pg").resolve()
        assert not (pgdata / "postmaster.pid").exists()  # the last user stopped the embedded server
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        if server.stderr is not None:
            server.stderr.close()
        shutil.rmtree(pgdata, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)
