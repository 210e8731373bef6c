"""The embedded PostgreSQL (store/embedded.py): private socket, untouched ancestors, crash leftovers."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from pipelines.errors import StoreError
from pipelines.store.embedded import EmbeddedServer, private_dir


@pytest.fixture()
def private_root() -> Iterator[Path]:
    """A fresh 0700 folder outside pytest's basetemp (other sessions prune that)."""
    root = Path(tempfile.mkdtemp(prefix="predcache-emb-test-"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


def _start(pgdata: Path) -> EmbeddedServer:
    server = EmbeddedServer(pgdata)
    server.start()
    return server


def _query(server: EmbeddedServer) -> str:
    with psycopg.connect(server.get_uri()) as conn:
        return str(conn.execute("SELECT current_user").fetchone()[0])  # type: ignore[index]


def _socket_dir_is_private(server: EmbeddedServer) -> bool:
    assert server.socket_dir is not None
    st = server.socket_dir.lstat()
    return stat.S_ISDIR(st.st_mode) and st.st_mode & 0o077 == 0 and st.st_uid == server.user.pw_uid


def test_server_starts_without_widening_the_data_folders_ancestors(private_root: Path) -> None:
    modes = {p: p.stat().st_mode for p in [private_root, *private_root.parents]}
    server = _start(private_root / "home" / "pg")
    try:
        assert _query(server) == "postgres" and _socket_dir_is_private(server)
        assert {p: p.stat().st_mode for p in modes} == modes
    finally:
        server.cleanup(delete=True)


def test_a_long_data_path_puts_the_socket_in_a_private_folder_not_a_shared_one(private_root: Path) -> None:
    private_root.chmod(0o711)  # reachable by the server's user even as root: the data stays in place
    pgdata = private_root / ("d" * 60) / ("e" * 60) / "pg"
    server = _start(pgdata)
    try:
        assert server.socket_dir != server.pgdata and _socket_dir_is_private(server)
        assert _query(server) == "postgres"
    finally:
        server.cleanup(delete=True)


def test_a_socket_folder_open_to_others_or_a_symlink_is_refused(private_root: Path) -> None:
    import pwd

    me = pwd.getpwuid(os.geteuid())
    shared = private_root / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    with pytest.raises(StoreError, match="not a private folder"):
        private_dir(shared, me)
    (private_root / "link").symlink_to(shared)
    with pytest.raises(StoreError, match="not a private folder"):
        private_dir(private_root / "link", me)


def test_a_stale_postmaster_pid_naming_a_live_other_process_is_cleaned_up(private_root: Path) -> None:
    pgdata = private_root / "pg"
    server = _start(pgdata)
    server.stop()
    # A process of the server's own user took the dead postmaster's pid: postgres alone would refuse
    # to start ("another server might be running").
    as_user = {"user": server.user.pw_uid, "group": server.user.pw_gid, "extra_groups": []}
    squatter = subprocess.Popen(["sleep", "60"], **(as_user if os.geteuid() == 0 else {}))  # type: ignore[call-overload]
    try:
        real = server.pgdata / "postmaster.pid"
        real.write_text(
            f"{squatter.pid}\n{server.pgdata}\n1700000000\n5432\n{server.socket_dir}\n\n0 0\nready\n"
        )
        again = _start(pgdata)
        assert _query(again) == "postgres"
        again.cleanup()
    finally:
        squatter.kill()
        squatter.wait()
        server.cleanup(delete=True)


def test_a_dead_process_in_the_handle_list_does_not_keep_the_server_running(private_root: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    server = _start(private_root / "pg")
    handles = server.pgdata / ".handle_pids.json"
    handles.write_text(json.dumps([gone.pid, *json.loads(handles.read_text())]))
    server.cleanup()
    assert not (server.pgdata / "postmaster.pid").exists()
    server.cleanup(delete=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="relocation only happens when predcache runs as root")
def test_as_root_data_under_an_unreachable_folder_moves_to_a_private_one_instead_of_chmod(
    private_root: Path,
) -> None:
    assert private_root.stat().st_mode & 0o777 == 0o700
    server = _start(private_root / "pg")
    try:
        assert (private_root / "pg").is_symlink() and server.pgdata == (private_root / "pg").resolve()
        assert server.pgdata.parent.stat().st_mode & 0o077 == 0
        assert private_root.stat().st_mode & 0o777 == 0o700
        assert _query(server) == "postgres"
    finally:
        server.cleanup(delete=True)
    assert not (private_root / "pg").exists() and not server.pgdata.exists()
