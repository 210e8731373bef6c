"""The scratch lifecycle of Beam's reference shuffle, on a real local filesystem."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from pipelines.engines import scratch


def _piece(root: Path, run_id: int, attempt: int, shard_id: str = "01-0") -> str:
    store = scratch.Scratch(str(root))
    fs, _ = store.filesystem()
    path = scratch.piece_path(store.attempt_dir(run_id, attempt), shard_id, 0, 0)
    return scratch.write_piece(fs, path, pa.table({"k": ["a", "b"], "x": [1.0, 2.0]}))


def test_a_piece_reads_back_as_written_and_delete_removes_its_empty_shard_folder(tmp_path: Path) -> None:
    path = _piece(tmp_path, 1, 1)
    fs, _ = scratch.Scratch(str(tmp_path)).filesystem()
    (table,) = scratch.read_pieces(fs, [path])
    assert table.to_pydict() == {"k": ["a", "b"], "x": [1.0, 2.0]}
    scratch.delete_pieces(fs, [path])
    assert not Path(path).exists() and not Path(path).parent.exists()


def test_cleaning_removes_runs_no_longer_scoring_and_older_attempts_of_this_run(tmp_path: Path) -> None:
    for run_id, attempt in ((1, 1), (2, 1), (3, 1), (3, 2)):
        _piece(tmp_path, run_id, attempt)
    store = scratch.Scratch(str(tmp_path))
    removed = scratch.clean_abandoned(store, run_id=3, attempt=2, scoring=lambda ids: [2])
    assert sorted(Path(p).relative_to(tmp_path).as_posix() for p in removed) == ["run-1", "run-3/attempt-1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run-2", "run-3"]
    assert (tmp_path / "run-3" / "attempt-2").is_dir()


def test_deleting_the_last_attempt_removes_the_runs_folder(tmp_path: Path) -> None:
    _piece(tmp_path, 7, 1)
    scratch.delete_attempt(scratch.Scratch(str(tmp_path)), 7, 1)
    assert list(tmp_path.iterdir()) == []


def test_a_filesystem_uri_names_the_same_scratch_as_its_local_path(tmp_path: Path) -> None:
    path = _piece(tmp_path, 1, 1)
    fs, root = scratch.Scratch(f"file://{tmp_path}").filesystem()
    assert root == str(tmp_path) and scratch.read_pieces(fs, [path])[0].num_rows == 2
