"""Input discovery and reading: a Parquet file or a folder of Parquet files (hive-style ok)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.core.card import Card
from pipelines.core.keys import key_hash
from pipelines.core.validate import REJECT_SCHEMA, check_schema, reject_rows
from pipelines.errors import InputError, one_line

PARQUET_SUFFIXES = (".parquet", ".parq", ".pq")


def list_input_files(path: Path) -> list[Path]:
    """Every Parquet file of the input, in a stable order.

    Raises:
        InputError: the path does not exist or holds no Parquet file.
    """
    if not path.exists():
        raise InputError(f"input {path} does not exist; pass a Parquet file or a folder of them")
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in PARQUET_SUFFIXES)
    files = [p for p in files if not any(part.startswith((".", "_")) for part in p.relative_to(path).parts)]
    if not files:
        raise InputError(f"input folder {path} holds no Parquet files (*.parquet)")
    return files


def _open(path: Path) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(
            f"{path} is not a readable Parquet file ({one_line(exc)}); replace or remove it"
        ) from exc


#: Rows per batch when the planner streams the key column.
KEY_BATCH_ROWS = 65_536


def check_input(files: list[Path], card: Card, *, max_row_group_rows: int | None = None) -> None:
    """Open every file's footer: its schema must match the card, its row groups fit the bound.

    Raises:
        InputError: a schema mismatch, or a row group larger than ``max_row_group_rows`` (a row
            group is the smallest part of a file a reader can stream, so it bounds memory).
    """
    for path in files:
        handle = _open(path)
        check_schema(handle.schema_arrow, card, source=str(path))
        if max_row_group_rows is not None:
            check_row_groups(path, handle.metadata, max_row_group_rows)


def check_row_groups(path: Path, metadata: pq.FileMetaData, max_rows: int) -> None:
    """Raise InputError if a row group of the file holds more than ``max_rows`` rows."""
    largest = max((metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)), default=0)
    if largest > max_rows:
        raise InputError(
            f"{path} has a row group of {largest:,} rows, above the limit of {max_rows:,} "
            "(PREDCACHE_MAX_ROW_GROUP_ROWS); rewrite it with smaller row groups, e.g. "
            "pyarrow.parquet.write_table(pyarrow.parquet.read_table(src), dst, row_group_size=131072), "
            "or raise the limit"
        )


def fingerprint(files: list[Path], root: Path) -> str:
    """Identity of the input's content as listed: relative names, sizes and modification times."""
    digest = hashlib.sha256()
    base = root if root.is_dir() else root.parent
    for path in files:
        stat = path.stat()
        digest.update(f"{path.relative_to(base)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def read_table(path: Path, columns: list[str]) -> pa.Table:
    """Read ``columns`` of one file (only those: the scorer needs key + model inputs)."""
    try:
        return _open(path).read(columns=columns)
    except (pa.ArrowException, OSError) as exc:
        raise _unreadable(path, exc) from exc


def iter_tables(path: Path, columns: list[str], *, batch_rows: int) -> Iterator[pa.Table]:
    """Read one file in slices of at most ``batch_rows`` rows (row-group streaming)."""
    handle = _open(path)
    try:
        for batch in handle.iter_batches(batch_size=batch_rows, columns=columns):
            yield pa.Table.from_batches([batch])
    except (pa.ArrowException, OSError) as exc:
        raise _unreadable(path, exc) from exc


def _unreadable(path: Path, exc: BaseException) -> InputError:
    return InputError(f"{path} could not be read ({one_line(exc)}); replace or remove it")


def key_hashes(files: list[Path], key: str, *, batch_rows: int = KEY_BATCH_ROWS) -> np.ndarray:
    """Hashes of every row's key over all files (the plan's one pass over the input).

    The key column is streamed in batches of ``batch_rows``: memory holds the hashes (8 bytes a
    row) and one batch of keys, not every key of the input.
    """
    parts = [key_hash(batch.column(0)) for path in files for batch in _key_batches(path, key, batch_rows)]
    return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)


def unplannable(keys: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Per key: null or empty (such keys share one hash, so they are rejected before planning)."""
    if isinstance(keys, pa.ChunkedArray):
        keys = keys.combine_chunks() if keys.num_chunks != 1 else keys.chunk(0)
    if pa.types.is_dictionary(keys.type):
        keys = keys.cast(keys.type.value_type)
    if pa.types.is_integer(keys.type):  # integer keys (their decimal text) are never empty
        return pc.is_null(keys)
    return pc.fill_null(pc.equal(pc.binary_length(keys), 0), True)


@dataclass(frozen=True)
class KeyScan:
    """The planning pass over the input: hashes of plannable keys, and the rows rejected up front."""

    hashes: np.ndarray
    rejects: pa.Table


def scan_keys(files: list[Path], card: Card, *, batch_rows: int = KEY_BATCH_ROWS) -> KeyScan:
    """Hash every row's key; rows whose key is null or empty become rejects instead.

    The key column is streamed in batches of ``batch_rows``; memory holds the hashes (8 bytes a
    row, in one array sized from the files' metadata: no list of parts to concatenate, which
    would hold them twice) and one batch of keys. Only a file that has unplannable rows is read
    again, with the model's columns, to record them.
    """
    hashes = np.empty(sum(_open(path).metadata.num_rows for path in files), dtype=np.int64)
    filled = 0
    rejects: list[pa.Table] = []
    for path in files:
        masks: list[pa.Array] = []
        for batch in _key_batches(path, card.key, batch_rows):
            keys = batch.column(0)
            bad = unplannable(keys)
            masks.append(bad)
            part = key_hash(keys.filter(pc.invert(bad)) if pc.any(bad).as_py() else keys)
            if filled + len(part) > len(hashes):  # the file changed while it was read
                raise InputError(f"{path} changed while it was read; run again once it is written")
            hashes[filled : filled + len(part)] = part
            filled += len(part)
        if not any(pc.any(mask).as_py() for mask in masks):
            continue
        columns = [card.key, *[c for c in card.columns if c != card.key]]
        rows = read_table(path, columns).filter(pa.concat_arrays(masks))
        reasons = pc.if_else(pc.is_null(rows.column(card.key)), "key is null", "key is empty")
        rejects.append(reject_rows(rows, reasons.combine_chunks(), card))
    return KeyScan(
        hashes=hashes[:filled],
        rejects=pa.concat_tables(rejects) if rejects else REJECT_SCHEMA.empty_table(),
    )


def _key_batches(path: Path, key: str, batch_rows: int) -> Iterator[pa.RecordBatch]:
    handle = _open(path)
    try:
        yield from handle.iter_batches(batch_size=batch_rows, columns=[key])
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{path} could not be read ({one_line(exc)}); replace or remove it") from exc


def group_files(files: list[Path], groups: int) -> list[list[Path]]:
    """Split files into at most ``groups`` read tasks of balanced size (largest first, least loaded).

    Each task's files keep the input order; empty tasks are dropped.
    """
    buckets: list[list[Path]] = [[] for _ in range(max(1, min(groups, len(files))))]
    loads = [0] * len(buckets)
    for path in sorted(files, key=lambda p: (-p.stat().st_size, str(p))):
        target = loads.index(min(loads))
        buckets[target].append(path)
        loads[target] += path.stat().st_size
    order = {path: i for i, path in enumerate(files)}
    return [sorted(bucket, key=order.__getitem__) for bucket in buckets if bucket]


def read_task_count(files: list[Path], *, workers: int, group_bytes: int) -> int:
    """How many read tasks: enough to keep every worker busy, few enough that each is large."""
    total = sum(p.stat().st_size for p in files)
    return max(2 * workers, -(-total // group_bytes))
