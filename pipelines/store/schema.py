"""The cache schema's files and the revision a cache is at: reads only, no Alembic (cheap to import).

``pipelines.store.migrations`` applies the files; this module is what every command and the API
need to know whether there is anything to apply (``at_head``: the newest revision, and every
applied file's sha256 unchanged), so a command on an up-to-date cache never loads Alembic.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from pipelines.errors import ConfigError, MigrationError
from pipelines.resources import sql_dir

#: Alembic's table of the current revision.
VERSION_TABLE = "alembic_version"
#: Applied files and their sha256 (the pre-Alembic runner's table, kept as the checksum record).
CHECKSUM_TABLE = "schema_migrations"
_FILE_NAME = re.compile(r"^(?P<revision>\d{3})_[A-Za-z0-9_]+\.sql$")


@dataclass(frozen=True)
class Migration:
    """One ``sql/NNN_name.sql`` file: its revision (``NNN``), text and sha256."""

    revision: str
    path: Path
    sql: str

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def migrations(folder: Path | None = None) -> list[Migration]:
    """The migrations in ``folder`` (default: the shipped ``sql/``), in revision order.

    Raises:
        ConfigError: the folder holds no migration, a file is not named ``NNN_name.sql``, or two
            files share a number.
    """
    folder = folder if folder is not None else sql_dir()
    found: dict[str, Migration] = {}
    for path in sorted(folder.glob("*.sql")):
        match = _FILE_NAME.match(path.name)
        if match is None:
            raise ConfigError(f"{path} is not named NNN_name.sql (three digits, then a name); rename it")
        revision = match["revision"]
        if revision in found:
            raise ConfigError(
                f"{found[revision].name} and {path.name} share the number {revision}; renumber the newer one"
            )
        found[revision] = Migration(revision, path, path.read_text())
    if not found:
        raise ConfigError(f"no SQL migrations in {folder}; the install is incomplete (reinstall predcache)")
    return list(found.values())


def head(folder: Path | None = None) -> str:
    """The newest revision (the number of the last ``sql/NNN_name.sql``)."""
    return migrations(folder)[-1].revision


def current_revision(url: str) -> str | None:
    """The cache's revision, or None when it was never migrated (reads only: no DDL)."""
    from pipelines.store.db import connection

    with connection(url, autocommit=True) as conn:
        row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (VERSION_TABLE,)).fetchone()
        if not row or not row[0]:
            return None
        version = conn.execute(f"SELECT version_num FROM {VERSION_TABLE}").fetchone()  # type: ignore[arg-type]  # constant name
    return str(version[0]) if version else None


def require_head(url: str, *, folder: Path | None = None) -> None:
    """Check that the cache at ``url`` is at the newest revision, without changing it.

    Raises:
        MigrationError: it is behind (run ``predcache db migrate``) or ahead (upgrade predcache).
    """
    steps = migrations(folder)
    current = current_revision(url)
    if current == steps[-1].revision:
        return
    if current is None or current in {step.revision for step in steps}:
        raise MigrationError(
            f"the cache schema is at revision {current or 'none'}, this predcache needs "
            f"{steps[-1].revision}; run `predcache db migrate`"
        )
    raise MigrationError(
        f"the cache schema is at revision {current}, newer than this predcache knows "
        f"({steps[-1].revision}); upgrade predcache"
    )


def at_head(url: str, *, folder: Path | None = None) -> bool:
    """True when the cache at ``url`` is at the newest revision with every file applied as it is now.

    False (migrate, which also explains any mismatch) when it is behind, ahead, never migrated,
    or a recorded checksum differs from its file.
    """
    from pipelines.store.db import connection

    steps = migrations(folder)
    with connection(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT to_regclass(%s) IS NOT NULL AND to_regclass(%s) IS NOT NULL",
            (VERSION_TABLE, CHECKSUM_TABLE),
        ).fetchone()
        if not row or not row[0]:
            return False
        version = conn.execute(f"SELECT version_num FROM {VERSION_TABLE}").fetchone()  # type: ignore[arg-type]  # constant name
        recorded = dict(conn.execute(f"SELECT name, sha256 FROM {CHECKSUM_TABLE}").fetchall())  # type: ignore[arg-type]  # constant name
    expected = {step.name: step.sha256 for step in steps}
    return version is not None and str(version[0]) == steps[-1].revision and recorded == expected
