"""Migrations: one Alembic revision per sql/NNN_name.sql, applied once, checked by checksum."""

from __future__ import annotations

import hashlib
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from pipelines.errors import ConfigError, MigrationError
from pipelines.resources import sql_dir
from pipelines.store.db import connection, migrate
from pipelines.store.migrations import current_revision, head, migrations, require_head

#: Not idempotent on purpose: running either file twice fails, so a re-run cannot go unnoticed.
FIRST = "CREATE TABLE t (id integer PRIMARY KEY);\nINSERT INTO t VALUES (1);\n"
SECOND = "INSERT INTO t VALUES (2);\n"
#: The table the pre-Alembic runner kept.
OLD_RUNNER_TABLE = (
    "CREATE TABLE schema_migrations (name text PRIMARY KEY, sha256 text NOT NULL, "
    "applied_at timestamptz NOT NULL DEFAULT now())"
)


def _folder(tmp_path: Path, *files: tuple[str, str]) -> Path:
    folder = tmp_path / "sql"
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files:
        (folder / name).write_text(text)
    return folder


def _rows(url: str) -> list[int]:
    with connection(url) as conn:
        return [row[0] for row in conn.execute("SELECT id FROM t ORDER BY id")]


def test_the_shipped_migrations_bring_a_new_database_to_head_once(new_database: Callable[[], str]) -> None:
    url = new_database()
    assert migrate(url) == [m.name for m in migrations()]
    assert migrate(url) == []
    assert current_revision(url) == head()
    require_head(url)


def test_a_file_dropped_into_the_folder_is_the_next_revision(
    new_database: Callable[[], str], tmp_path: Path
) -> None:
    url = new_database()
    folder = _folder(tmp_path, ("001_first.sql", FIRST))
    assert migrate(url, folder=folder) == ["001_first.sql"]
    _folder(tmp_path, ("002_second.sql", SECOND))
    assert migrate(url, folder=folder) == ["002_second.sql"]
    assert _rows(url) == [1, 2] and current_revision(url) == "002"


def test_an_applied_migration_edited_afterwards_is_an_error_not_a_rerun(
    new_database: Callable[[], str], tmp_path: Path
) -> None:
    url = new_database()
    folder = _folder(tmp_path, ("001_first.sql", FIRST))
    migrate(url, folder=folder)
    (folder / "001_first.sql").write_text(FIRST + "INSERT INTO t VALUES (3);\n")
    with pytest.raises(MigrationError, match=r"sql/001_first.sql changed after it was applied") as raised:
        migrate(url, folder=folder)
    assert "\n" not in str(raised.value) and "new sql/NNN_name.sql" in str(raised.value)
    assert _rows(url) == [1]


def test_a_database_of_the_old_runner_is_adopted_without_rerunning(
    new_database: Callable[[], str], tmp_path: Path
) -> None:
    url = new_database()
    with connection(url) as conn:  # what the pre-Alembic runner left: the schema and its checksum table
        conn.execute(FIRST)
        conn.execute(OLD_RUNNER_TABLE)
        conn.execute(
            "INSERT INTO schema_migrations VALUES (%s, %s)",
            ("001_first.sql", hashlib.sha256(FIRST.encode()).hexdigest()),
        )
    folder = _folder(tmp_path, ("001_first.sql", FIRST), ("002_second.sql", SECOND))
    assert migrate(url, folder=folder) == ["002_second.sql"]
    assert _rows(url) == [1, 2] and current_revision(url) == "002"


def test_adopting_reruns_once_a_file_the_old_runner_recorded_with_other_content(
    new_database: Callable[[], str], tmp_path: Path
) -> None:
    url = new_database()
    with connection(url) as conn:  # the old runner re-ran changed files: it would have run this one again
        conn.execute("CREATE TABLE t (id integer PRIMARY KEY)")
        conn.execute(OLD_RUNNER_TABLE)
        conn.execute("INSERT INTO schema_migrations VALUES ('001_first.sql', 'an older version')")
    idempotent = "CREATE TABLE IF NOT EXISTS t (id integer PRIMARY KEY);\nINSERT INTO t VALUES (7);\n"
    folder = _folder(tmp_path, ("001_first.sql", idempotent))
    assert migrate(url, folder=folder) == ["001_first.sql"]
    assert migrate(url, folder=folder) == []
    assert _rows(url) == [7] and current_revision(url) == "001"


def test_concurrent_migrators_apply_each_file_once(new_database: Callable[[], str], tmp_path: Path) -> None:
    url = new_database()
    folder = _folder(tmp_path, ("001_first.sql", FIRST), ("002_second.sql", SECOND))
    applied: list[list[str]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            applied.append(migrate(url, folder=folder))
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(name for names in applied for name in names) == ["001_first.sql", "002_second.sql"]
    assert _rows(url) == [1, 2]


def test_a_database_behind_head_is_reported_with_the_command_to_run(
    new_database: Callable[[], str], tmp_path: Path
) -> None:
    url = new_database()
    with pytest.raises(MigrationError, match=r"revision none, .* run `predcache db migrate`"):
        require_head(url)
    folder = _folder(tmp_path, ("001_first.sql", FIRST))
    migrate(url, folder=folder)
    _folder(tmp_path, ("002_second.sql", SECOND))
    with pytest.raises(MigrationError, match=r"at revision 001, this predcache needs 002"):
        require_head(url, folder=folder)


def test_a_database_newer_than_the_shipped_migrations_says_upgrade_predcache(
    new_database: Callable[[], str], tmp_path: Path
) -> None:
    url = new_database()
    folder = _folder(tmp_path, ("001_first.sql", FIRST), ("002_second.sql", SECOND))
    migrate(url, folder=folder)
    (folder / "002_second.sql").unlink()
    with pytest.raises(MigrationError, match="upgrade predcache"):
        require_head(url, folder=folder)
    with pytest.raises(MigrationError, match=r"does not ship \(002_second.sql\).*upgrade predcache"):
        migrate(url, folder=folder)


def test_a_misnamed_or_duplicate_numbered_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not named NNN_name.sql"):
        migrations(_folder(tmp_path / "a", ("1_first.sql", FIRST)))
    with pytest.raises(ConfigError, match="share the number 001"):
        migrations(_folder(tmp_path / "b", ("001_first.sql", FIRST), ("001_other.sql", SECOND)))


def test_the_shipped_files_are_found_through_resources(tmp_path: Path) -> None:
    shipped = migrations()
    assert [m.path.parent for m in shipped] == [sql_dir()] * len(shipped)
    copy = shutil.copytree(sql_dir(), tmp_path / "copy")
    assert [m.sha256 for m in migrations(copy)] == [m.sha256 for m in shipped]


def test_a_cache_at_head_is_checked_without_loading_alembic(migrated_url: str) -> None:
    """Every command migrates first: on an up-to-date cache that is two reads, not an Alembic start."""
    import subprocess
    import sys

    probe = (
        "import sys; from pipelines.store.db import migrate; "
        f"print(migrate({migrated_url!r}), 'alembic' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.split() == ["[]", "False"], out.stderr[-2000:]
