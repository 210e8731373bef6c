"""Scratch space for shuffling references instead of rows: Arrow IPC pieces on any pyarrow filesystem.

The read stage writes each (read task, shard) piece once as an uncompressed Arrow IPC file and
passes on only its path; the score stage memory-maps its shard's pieces (local disk) or streams
them (any other filesystem), and deletes them once the shard is committed.

Layout: ``{root}/run-{run_id}/attempt-{attempt}/{shard_id}/{task}-{part}.arrow``. An attempt's
folder is abandoned when the attempt dies (kill -9, a failed run); ``clean_abandoned`` removes
such folders at the start of the next run: every older attempt of the run being scored, and every
run folder whose run is no longer being scored.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.ipc as ipc

PIECE_SUFFIX = ".arrow"


@dataclass(frozen=True)
class Scratch:
    """A scratch root: a local folder or a pyarrow filesystem URI (``s3://bucket/prefix``, ...)."""

    uri: str

    def filesystem(self) -> tuple[pafs.FileSystem, str]:
        """(filesystem, root path inside it); local folders are memory-mapped when read."""
        if "://" not in self.uri:
            return pafs.LocalFileSystem(use_mmap=True), str(Path(self.uri).resolve())
        fs, root = pafs.FileSystem.from_uri(self.uri)
        if isinstance(fs, pafs.LocalFileSystem):
            fs = pafs.LocalFileSystem(use_mmap=True)
        return fs, root.rstrip("/")

    def attempt_dir(self, run_id: int, attempt: int) -> str:
        """Path (inside the filesystem) of one attempt's pieces."""
        return f"{self.filesystem()[1]}/run-{run_id}/attempt-{attempt}"


def piece_path(attempt_dir: str, shard_id: str, task: int, part: int) -> str:
    return f"{attempt_dir}/{shard_id}/{task}-{part}{PIECE_SUFFIX}"


def write_piece(fs: pafs.FileSystem, path: str, table: pa.Table) -> str:
    """Write ``table`` as one uncompressed Arrow IPC file at ``path``; returns ``path``."""
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(path) as sink, ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return path


def read_pieces(fs: pafs.FileSystem, paths: Iterable[str]) -> list[pa.Table]:
    """The pieces at ``paths`` (memory-mapped on a local filesystem: no copy until used)."""
    tables = []
    for path in paths:
        with fs.open_input_file(path) as source:
            tables.append(ipc.open_file(source).read_all())
    return tables


def delete_pieces(fs: pafs.FileSystem, paths: Iterable[str]) -> None:
    """Delete the pieces and their shard folder if it is left empty (missing files are fine)."""
    folders = set()
    for path in paths:
        folders.add(path.rsplit("/", 1)[0])
        try:
            fs.delete_file(path)
        except FileNotFoundError:
            continue
    for folder in folders:
        info = fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
        if not info:
            try:
                fs.delete_dir(folder)
            except (FileNotFoundError, OSError):
                continue


def delete_attempt(scratch: Scratch, run_id: int, attempt: int) -> None:
    """Remove one attempt's folder (and the run's folder if it is left empty)."""
    fs, root = scratch.filesystem()
    _delete_dir(fs, scratch.attempt_dir(run_id, attempt))
    run_dir = f"{root}/run-{run_id}"
    if not fs.get_file_info(pafs.FileSelector(run_dir, allow_not_found=True)):
        _delete_dir(fs, run_dir)


def _delete_dir(fs: pafs.FileSystem, path: str) -> None:
    try:
        fs.delete_dir(path)
    except FileNotFoundError:
        return


def clean_abandoned(scratch: Scratch, *, run_id: int, attempt: int, scoring: Any) -> list[str]:
    """Delete scratch no live attempt can read; returns the folders removed.

    Args:
        scratch: the scratch root.
        run_id: the run about to be scored.
        attempt: its attempt number (older attempts of it are abandoned).
        scoring: callable(list of run ids) -> the subset whose runs are being scored now (other
            processes may be scoring them: their folders stay).
    """
    fs, root = scratch.filesystem()
    entries = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    runs: dict[int, str] = {}
    for entry in entries:
        name = entry.base_name
        if entry.type == pafs.FileType.Directory and name.startswith("run-") and name[4:].isdigit():
            runs[int(name[4:])] = entry.path
    removed: list[str] = []
    others = [r for r in runs if r != run_id]
    live = set(scoring(others)) if others else set()
    for other in others:
        if other not in live:
            _delete_dir(fs, runs[other])
            removed.append(runs[other])
    if run_id in runs:
        for entry in fs.get_file_info(pafs.FileSelector(runs[run_id], allow_not_found=True)):
            name = entry.base_name
            if name.startswith("attempt-") and name[8:].isdigit() and int(name[8:]) < attempt:
                _delete_dir(fs, entry.path)
                removed.append(entry.path)
    return removed
