"""The API's own login (sql/010_least_privilege.sql): its password, and the URL the API connects with.

The role ``predcache_api`` may only SELECT what lookups need (the grants of ``predcache_reader``)
and cannot SET ROLE to the owner. Its password is ``PREDCACHE_API_DB_PASSWORD`` when configured,
else one generated once and kept in ``PREDCACHE_HOME/api_db_password`` (mode 0600). The server
receives only its SCRAM-SHA-256 verifier, so the plain password never reaches a server log.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pipelines.errors import ConfigError
from pipelines.settings import Settings

API_ROLE = "predcache_api"
PASSWORD_FILE = "api_db_password"
SCRAM_ITERATIONS = 4096
_ADMIN_HINT = (
    f"as an administrator run: CREATE ROLE {API_ROLE} LOGIN PASSWORD '...'; GRANT predcache_reader TO "
    f"{API_ROLE}; then set PREDCACHE_API_DATABASE_URL (or PREDCACHE_API_DB_PASSWORD) and rerun "
    "`predcache db migrate`"
)


@dataclass(frozen=True)
class ApiLogin:
    """The API role's password and where it comes from (for `db migrate` to tell the operator)."""

    password: str
    source: str  # "PREDCACHE_API_DB_PASSWORD" or the path of the generated file


def api_password(settings: Settings) -> ApiLogin:
    """The configured password (PREDCACHE_API_DB_PASSWORD, else the one in PREDCACHE_API_DATABASE_URL),
    or the generated one in ``home`` (created with mode 0600 if absent)."""
    if settings.api_db_password:
        return ApiLogin(settings.api_db_password, "PREDCACHE_API_DB_PASSWORD")
    if settings.api_database_url:
        in_url = conninfo_to_dict(settings.api_database_url).get("password")
        if in_url:
            return ApiLogin(str(in_url), "PREDCACHE_API_DATABASE_URL")
    path = password_file(settings.home)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if path.stat().st_mode & 0o077:
            raise ConfigError(
                f"{path} is readable by other users; run `chmod 600 {path}` (it holds the API's database "
                "password)"
            ) from None
        password = path.read_text().strip()
        if not password:
            raise ConfigError(f"{path} is empty; delete it and rerun `predcache db migrate`") from None
        return ApiLogin(password, str(path))
    password = secrets.token_urlsafe(24)
    with os.fdopen(fd, "w") as out:
        out.write(password + "\n")
    return ApiLogin(password, str(path))


def scram_verifier(password: str, *, salt: bytes | None = None, iterations: int = SCRAM_ITERATIONS) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for ``password`` (RFC 5802/7677, as libpq's)."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    stored_key = hashlib.sha256(hmac.new(salted, b"Client Key", "sha256").digest()).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    salt_b64, stored_b64, server_b64 = (base64.b64encode(b).decode() for b in (salt, stored_key, server_key))
    return f"SCRAM-SHA-256${iterations}:{salt_b64}${stored_b64}:{server_b64}"


def set_api_password(conn: psycopg.Connection[Any], password: str) -> None:
    """Give ``predcache_api`` this password (as a SCRAM verifier).

    Raises:
        ConfigError: the role is missing, or this login may not change it (says what an admin runs).
    """
    if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (API_ROLE,)).fetchone() is None:
        raise ConfigError(
            f"the database has no role {API_ROLE} (the migrating user may not create roles); {_ADMIN_HINT}"
        )
    if _has_password(conn, password):
        return  # unchanged: no write to the cluster-wide role (other databases may be migrating)
    try:
        conn.execute(
            sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                sql.Identifier(API_ROLE), sql.Literal(scram_verifier(password))
            )
        )
    except psycopg.errors.InsufficientPrivilege as exc:
        raise ConfigError(f"this login may not set the password of {API_ROLE}; {_ADMIN_HINT}") from exc


def _has_password(conn: psycopg.Connection[Any], password: str) -> bool:
    """Whether the role's stored verifier is this password's (False when unreadable: not a superuser)."""
    try:
        with conn.transaction():
            row = conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (API_ROLE,)).fetchone()
    except psycopg.errors.InsufficientPrivilege:
        return False
    stored = str(row[0]) if row and row[0] else ""
    if not stored.startswith("SCRAM-SHA-256$"):
        return False
    try:
        iterations, salt = stored.split("$")[1].split(":")
        return hmac.compare_digest(
            scram_verifier(password, salt=base64.b64decode(salt), iterations=int(iterations)), stored
        )
    except ValueError:
        return False


def api_url(owner_url: str, password: str) -> str:
    """``owner_url`` (same server and database) logged in as ``predcache_api`` with ``password``."""
    params = conninfo_to_dict(owner_url)
    params.update(user=API_ROLE, password=password)
    return make_conninfo("", **{k: v for k, v in params.items() if v is not None})


def prepare_api_login(
    conn: psycopg.Connection[Any], settings: Settings, owner_url: str
) -> tuple[str, ApiLogin]:
    """Set the API role's password (configured or generated) and return the API's URL with it.

    Args:
        conn: a connection as the owner (after `migrate`).
        settings: where the password comes from.
        owner_url: the owner's URL, whose server and database the API's URL keeps.

    Raises:
        ConfigError: the role is missing or cannot be changed by this login, or the password file is unsafe.
    """
    login = api_password(settings)
    set_api_password(conn, login.password)
    return api_url(owner_url, login.password), login


def password_file(home: Path) -> Path:
    """Where a generated API password is kept."""
    return home.expanduser() / PASSWORD_FILE
