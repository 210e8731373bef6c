"""Schema migrations: each ``sql/NNN_name.sql`` file is one Alembic revision, applied once, in order.

The revision chain is generated from the folder (``001`` -> ``002`` -> ...), so a new migration
is a new file dropped into ``sql/``; files are found only through ``resources.sql_dir()``.
Alembic keeps the current revision (table ``alembic_version``) and runs the steps; each step is
the file's plain SQL, run as it is. Beside it, ``schema_migrations`` records each applied file's
sha256: a file edited after it was applied is an error (migrations are append-only), never a
silent re-run. ``schema_migrations`` is also the table of the hand-written runner this replaces,
so a database it migrated is adopted: stamped at its last applied file, nothing re-run.

The whole upgrade is one transaction holding an advisory lock, so concurrent migrators (two
commands starting at once, several Airflow tasks) apply each file once.
"""

from __future__ import annotations

import types
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
from alembic import op
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext, RevisionStep
from alembic.script import Script, ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, create_engine, pool, text

from pipelines.errors import MigrationError, one_line
from pipelines.store.schema import (
    CHECKSUM_TABLE,
    VERSION_TABLE,
    Migration,
    current_revision,
    head,
    migrations,
    require_head,
)

__all__ = ["current_revision", "head", "migrate", "migrations", "require_head"]

#: Advisory-lock id every migrator takes ("pred"); the lock ends with the migration's transaction.
MIGRATION_LOCK = 0x70726564
_CREATE_CHECKSUM_TABLE = (
    f"CREATE TABLE IF NOT EXISTS {CHECKSUM_TABLE} (name text PRIMARY KEY, sha256 text NOT NULL, "
    "applied_at timestamptz NOT NULL DEFAULT now())"
)
_UPGRADE = "upgrade predcache"
_FIX_EDITED = "migrations are append-only: restore the file and put the change in a new sql/NNN_name.sql"


def migrate(url: str, *, folder: Path | None = None) -> list[str]:
    """Bring the cache at ``url`` to the newest revision; return the file names applied now.

    Raises:
        MigrationError: an applied file was edited since, or the database has migrations this
            predcache does not know (it is newer).
        StoreError: the server cannot be reached.
    """
    from pipelines.store.db import connect

    steps = migrations(folder)
    scripts = _Scripts(steps)
    engine = create_engine("postgresql+psycopg://", creator=lambda: connect(url), poolclass=pool.NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(text("SELECT pg_advisory_xact_lock(:lock)"), {"lock": MIGRATION_LOCK})
            conn.exec_driver_sql(_CREATE_CHECKSUM_TABLE)
            rows = conn.exec_driver_sql(f"SELECT name, sha256 FROM {CHECKSUM_TABLE}")
            recorded: dict[str, str] = {name: sha256 for name, sha256 in rows}

            def upgrade_steps(heads: Any, context: MigrationContext) -> list[RevisionStep]:
                return scripts._upgrade_revs("head", heads)

            context = MigrationContext.configure(
                conn, opts={"script": scripts, "fn": upgrade_steps, "version_table": VERSION_TABLE}
            )
            adopting = bool(recorded) and not context.get_current_heads()
            _check_recorded(steps, recorded, adopting=adopting)
            caught_up = _adopt(context, scripts, steps, recorded) if adopting else []
            try:
                with Operations.context(context):
                    context.run_migrations()
            except CommandError as exc:
                raise MigrationError(f"cannot migrate the cache ({one_line(exc)}); {_UPGRADE}") from exc
    finally:
        engine.dispose()
    return caught_up + [step.name for step in steps if step.name not in recorded]


def _check_recorded(steps: list[Migration], recorded: dict[str, str], *, adopting: bool) -> None:
    known = {step.name for step in steps}
    unknown = sorted(set(recorded) - known)
    if unknown:
        raise MigrationError(
            f"the cache has migrations this predcache does not ship ({', '.join(unknown)}); "
            "it was migrated by a newer predcache: upgrade predcache"
        )
    for step in steps:
        then = recorded.get(step.name)
        if then is not None and then != step.sha256 and not adopting:
            raise MigrationError(
                f"sql/{step.name} changed after it was applied to this database (sha256 {then[:12]} then, "
                f"{step.sha256[:12]} now); {_FIX_EDITED}"
            )


def _adopt(
    context: MigrationContext, scripts: ScriptDirectory, steps: list[Migration], recorded: dict[str, str]
) -> list[str]:
    """Take over a database of the pre-Alembic runner: stamp its last applied file; return re-run names.

    That runner re-ran a file whose content had changed (its files were idempotent): files it
    recorded with another checksum are run once more here, as its next call would have done.
    """
    assert context.connection is not None  # configured with one
    driver = _driver(context.connection)
    stale = [step for step in steps if recorded.get(step.name, step.sha256) != step.sha256]
    for step in stale:
        driver.execute(step.sql)
        driver.execute(
            f"UPDATE {CHECKSUM_TABLE} SET sha256 = %s, applied_at = now() WHERE name = %s",
            (step.sha256, step.name),
        )
    context.stamp(scripts, [step for step in steps if step.name in recorded][-1].revision)
    return [step.name for step in stale]


def _apply(step: Migration) -> None:
    """One revision: the file's SQL as it is, then its checksum, in the migration's transaction."""
    driver = _driver(op.get_bind())
    driver.execute(step.sql)
    driver.execute(f"INSERT INTO {CHECKSUM_TABLE} (name, sha256) VALUES (%s, %s)", (step.name, step.sha256))


def _driver(bind: Connection) -> psycopg.Connection[Any]:
    """The psycopg connection under SQLAlchemy's: it runs a multi-statement file as it is."""
    driver = bind.connection.driver_connection
    assert isinstance(driver, psycopg.Connection), "migrations run on psycopg connections"
    return driver


def _no_downgrade() -> None:
    raise MigrationError(f"predcache migrations go forward only; {_FIX_EDITED}")


class _Scripts(ScriptDirectory):
    """Alembic's script directory, with one revision per SQL file instead of Python scripts."""

    def __init__(self, steps: list[Migration]) -> None:
        self._steps = steps
        super().__init__(str(steps[0].path.parent))

    def _load_revisions(self) -> Iterator[Script]:
        down: str | None = None
        for step in self._steps:
            module = types.ModuleType(f"predcache_sql_{step.revision}", step.name)
            module.__dict__.update(revision=step.revision, down_revision=down)
            upgrade = partial(_apply, step)
            # Alembic names a step by its function's __name__ when it logs the step.
            upgrade.__name__ = f"upgrade_{step.path.stem}"  # type: ignore[attr-defined]
            module.__dict__.update(upgrade=upgrade, downgrade=_no_downgrade)
            yield Script(module, step.revision, step.path)
            down = step.revision
