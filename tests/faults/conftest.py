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
        """pg_ctl restart -m fast: every session is cut, the server comes back on the same socket
        (pg_ctl reuses the options it was started with)."""
        from pipelines.store.embedded import _bin_dir, _run

        bin_dir, _ = _bin_dir()
        pg_ctl = str(bin_dir / "pg_ctl")
        pgdata = str(self.handle.pgdata)
        # -l: the restarted server writes to its log, not to pipes this call would wait on.
        _run(self.handle.user, pg_ctl, "-w", "-m", "fast", "-D", pgdata, "-l", f"{pgdata}/log", "restart")


@dataclass
class Tally:
    rows: list[dict[str, Any]] = field(default_factory=list)

    def add(self, fault: str, *, lost: int, duplicated: int, events: list[str]) -> None:
        self.rows.append({"fault": fault, "lost": lost, "duplicated": duplicated, "events": events})


@pytest.fixture(scope="session")
def fault_server() -> Iterator[Server]:
    from pipelines.store.embedded import EmbeddedServer

    root = Path(tempfile.mkdtemp(prefix="predcache-faults-pg-"))
    handle = EmbeddedServer(root / "data")
    handle.start()
    url = str(handle.get_uri())
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE DATABASE faults")
    from psycopg.conninfo import make_conninfo

    try:
        yield Server(make_conninfo(url, dbname="faults"), handle)
    finally:
        handle.cleanup(delete=True)
        shutil.rmtree(root, ignore_errors=True)


_TALLY = Tally()


@pytest.fixture(scope="session")
def tally() -> Tally:
    """Every fault injected in this session, with the keys lost and duplicated after its rerun."""
    return _TALLY


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print the tally (faults injected, keys lost, keys duplicated) after the run."""
    if not _TALLY.rows:
        return
    summary = {
        "faults": len(_TALLY.rows),
        "keys_lost": sum(r["lost"] for r in _TALLY.rows),
        "keys_duplicated": sum(r["duplicated"] for r in _TALLY.rows),
    }
    terminalreporter.section("fault suite tally")
    for row in _TALLY.rows:
        last = row["events"][-1] if row["events"] else ""
        terminalreporter.write_line(
            f"{row['fault']}: lost {row['lost']}, duplicated {row['duplicated']}; "
            f"{len(row['events'])} events, last: {last}"
        )
    terminalreporter.write_line(json.dumps(summary))
