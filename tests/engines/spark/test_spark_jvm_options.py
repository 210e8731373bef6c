"""The driver JVM's class-data-sharing archive: written by the first session, used by the next ones."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines.engines.spark_session import class_archive_option, session_conf


@pytest.fixture
def temp_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    class_archive_option.cache_clear()
    yield tmp_path
    class_archive_option.cache_clear()


@pytest.fixture
def java(tmp_path: Path) -> str:
    """A stand-in JDK binary: the archive's name depends only on its path and modification time."""
    binary = tmp_path / "jdk" / "bin" / "java"
    binary.parent.mkdir(parents=True)
    binary.write_bytes(b"")
    return str(binary)


def test_the_first_session_writes_the_class_archive_at_exit_and_a_later_process_maps_it(
    temp_root: Path, java: str
) -> None:
    first = class_archive_option(java, "")
    archive = Path(first.split("=", 1)[1])
    archive.write_bytes(b"written by the first JVM as it exits")
    class_archive_option.cache_clear()  # a new process
    assert first.startswith("-XX:ArchiveClassesAtExit=") and archive.parent.parent == temp_root
    assert class_archive_option(java, "") == f"-XX:SharedArchiveFile={archive}"


def test_a_session_with_extra_jars_gets_an_archive_of_its_own(temp_root: Path, java: str) -> None:
    plain = session_conf("local[2]", java=java)["spark.driver.extraJavaOptions"]
    with_jars = session_conf("local[2]", {"spark.jars": "/x/postgresql.jar"}, java=java)
    assert plain.split()[-1] != with_jars["spark.driver.extraJavaOptions"].split()[-1]
    assert "-XX:TieredStopAtLevel=1" in plain
