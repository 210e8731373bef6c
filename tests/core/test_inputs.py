"""core/inputs.py: which files are the input, their fingerprint, reading them, and read tasks."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.core.card import load_card
from pipelines.core.inputs import (
    check_input,
    fingerprint,
    group_files,
    iter_tables,
    key_hashes,
    list_input_files,
    read_table,
    read_task_count,
)
from pipelines.core.keys import key_hash
from pipelines.errors import InputError


def _write(path: Path, n: int, *, start: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ids = [f"k{i}" for i in range(start, start + n)]
    pq.write_table(pa.table({"id": ids, "x": [float(i) for i in range(n)], "n": list(range(n))}), path)
    return path


def test_a_folder_lists_its_parquet_files_in_order_without_hidden_or_underscored_ones(tmp_path: Path) -> None:
    b = _write(tmp_path / "date=2" / "b.parquet", 2)
    a = _write(tmp_path / "date=1" / "a.parquet", 2)
    _write(tmp_path / "_tmp" / "c.parquet", 2)
    _write(tmp_path / ".hidden.parquet", 2)
    (tmp_path / "notes.txt").write_text("not input")
    assert list_input_files(tmp_path) == [a, b]
    assert list_input_files(a) == [a]


def test_a_missing_path_or_a_folder_without_parquet_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        list_input_files(tmp_path / "absent")
    with pytest.raises(InputError, match="holds no Parquet files"):
        list_input_files(tmp_path)


def test_the_fingerprint_changes_when_a_file_changes_and_not_otherwise(tmp_path: Path) -> None:
    path = _write(tmp_path / "in" / "a.parquet", 3)
    before = fingerprint([path], tmp_path / "in")
    assert fingerprint([path], tmp_path / "in") == before
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert fingerprint([path], tmp_path / "in") != before


def test_reading_in_slices_gives_the_same_rows_as_reading_whole(tmp_path: Path) -> None:
    path = _write(tmp_path / "a.parquet", 10)
    whole = read_table(path, ["id", "x"])
    slices = list(iter_tables(path, ["id", "x"], batch_rows=4))
    assert whole.column_names == ["id", "x"] and [t.num_rows for t in slices] == [4, 4, 2]
    assert pa.concat_tables(slices).equals(whole)


def test_key_hashes_cover_every_row_of_every_file(tmp_path: Path) -> None:
    files = [_write(tmp_path / "a.parquet", 3), _write(tmp_path / "b.parquet", 2, start=3)]
    expected = key_hash(pa.chunked_array([[f"k{i}" for i in range(5)]]))
    assert np.array_equal(key_hashes(files, "id"), expected)


def test_a_file_that_is_not_parquet_is_one_line_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"not parquet at all\nsecond line")
    for read in (lambda: read_table(path, ["id"]), lambda: list(iter_tables(path, ["id"], batch_rows=2))):
        with pytest.raises(InputError, match=r"broken.parquet is not a readable Parquet file") as raised:
            read()
        assert "\n" not in str(raised.value)


def test_check_input_refuses_a_file_missing_a_model_input(
    tmp_path: Path, toy_model_builder: Callable[..., Path]
) -> None:
    card = load_card(toy_model_builder(tmp_path / "models"))
    good = _write(tmp_path / "in" / "a.parquet", 2)
    bad = tmp_path / "in" / "b.parquet"
    pq.write_table(pa.table({"id": ["z"], "x": [1.0]}), bad)
    check_input([good], card)
    with pytest.raises(InputError, match=r"b.parquet lacks model input column\(s\) n"):
        check_input([good, bad], card)


def test_read_tasks_balance_bytes_and_keep_each_tasks_files_in_input_order(tmp_path: Path) -> None:
    files = [_write(tmp_path / f"{i}.parquet", n) for i, n in enumerate([1000, 10, 10, 1000])]
    groups = group_files(files, 2)
    assert sorted(map(len, groups)) == [2, 2] and all(g == sorted(g, key=files.index) for g in groups)
    assert group_files(files[:1], 4) == [files[:1]]
    assert read_task_count(files, workers=2, group_bytes=1 << 40) == 4
