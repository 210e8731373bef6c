"""Which rows of a snapshot an incremental run has to score, decided once, before any engine starts.

Every run stores, per row it stored, the pair (key hash, input fingerprint) (``core.keys`` and
``core.fingerprint``); an incremental run also stores the pairs it carried over unchanged. Those
pairs are the *basis* of the next incremental run: a row of the new snapshot is unchanged when
its own pair is among the basis's, which means the key's current prediction was computed by
the same model version from the same inputs. Everything else is forwarded to the engine and
scored as in a full run: changed rows, new keys, and any row that is not provably unchanged
(a row ``validate`` would reject can never match, because stored pairs come from valid rows;
both occurrences of a duplicated key are forwarded so the shard rejects them as a full run would).

Comparing in the planner keeps the engines as they are (they see a smaller input) and costs one
streamed pass over the snapshot: read, hash the key, fingerprint the coerced inputs, look up.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.core.card import Card
from pipelines.core.fingerprint import fingerprint_columns, input_fingerprint
from pipelines.core.inputs import iter_tables, unplannable
from pipelines.core.keys import key_hash
from pipelines.core.validate import coerce

#: One stored pair: little-endian signed 64-bit key hash, then the row's input fingerprint.
PAIR = np.dtype([("key_hash", "<i8"), ("fp", "<i8")])


def make_pairs(key_hashes: np.ndarray, fingerprints: np.ndarray) -> np.ndarray:
    """Pairs sorted by key hash (the order ``Basis`` looks them up in)."""
    pairs = np.empty(len(key_hashes), dtype=PAIR)
    pairs["key_hash"] = key_hashes
    pairs["fp"] = fingerprints
    return sort_pairs(pairs)


def stored_pairs(predictions: pa.Table) -> np.ndarray:
    """The pairs of a shard's stored predictions (its ``key`` and ``input_fp`` columns)."""
    fingerprints = predictions.column("input_fp").to_numpy()
    return make_pairs(key_hash(predictions.column("key")), fingerprints)


def sort_pairs(pairs: np.ndarray) -> np.ndarray:
    return pairs[np.argsort(pairs["key_hash"], kind="stable")]


def pairs_from_bytes(parts: Iterable[bytes]) -> np.ndarray:
    """Stored parts (each the raw bytes of a ``PAIR`` array) as one array sorted by key hash."""
    arrays = [np.frombuffer(part, dtype=PAIR) for part in parts]
    if not arrays:
        return np.empty(0, dtype=PAIR)
    return sort_pairs(np.concatenate(arrays))


class Basis:
    """The pairs an incremental run compares with (sorted by key hash; empty: nothing is unchanged)."""

    def __init__(self, pairs: np.ndarray) -> None:
        self.pairs = pairs
        self._hashes = np.ascontiguousarray(pairs["key_hash"])
        self._fps = np.ascontiguousarray(pairs["fp"])

    def __len__(self) -> int:
        return len(self.pairs)

    def matches(self, key_hashes: np.ndarray, fingerprints: np.ndarray) -> np.ndarray:
        """Per row: its (key hash, fingerprint) pair is in the basis."""
        if not len(self._hashes) or not len(key_hashes):
            return np.zeros(len(key_hashes), dtype=bool)
        at = np.minimum(np.searchsorted(self._hashes, key_hashes), len(self._hashes) - 1)
        return (self._hashes[at] == key_hashes) & (self._fps[at] == fingerprints)

    def without(self, key_hashes: np.ndarray) -> np.ndarray:
        """The basis pairs whose key hash is not in ``key_hashes`` (keys this run rescored)."""
        if not len(self._hashes) or not len(key_hashes):
            return self.pairs
        at = np.minimum(np.searchsorted(self._hashes, key_hashes), len(self._hashes) - 1)
        drop = at[self._hashes[at] == key_hashes]
        keep = np.ones(len(self._hashes), dtype=bool)
        keep[drop] = False
        return self.pairs[keep]


@dataclass(frozen=True)
class Changes:
    """The planner's verdict on a snapshot.

    Attributes:
        forwarded: the rows to score, as read (the key and the model's input columns).
        unchanged: pairs of the rows found unchanged, sorted by key hash.
        rows: rows read in all.
    """

    forwarded: pa.Table
    unchanged: np.ndarray
    rows: int

    @property
    def rows_unchanged(self) -> int:
        return len(self.unchanged)

    def forwarded_key_hashes(self, card: Card) -> np.ndarray:
        return key_hash(self.forwarded.column(card.key)) if self.forwarded.num_rows else np.empty(0, np.int64)


def _matches(table: pa.Table, card: Card, basis: Basis, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(unchanged mask, fingerprints) of one batch; a batch an exact cast refuses matches nothing."""
    try:
        fingerprints = input_fingerprint(coerce(table, card), fingerprint_columns(card))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return np.zeros(table.num_rows, dtype=bool), np.zeros(table.num_rows, dtype=np.int64)
    same = basis.matches(hashes, fingerprints)
    bad_keys = unplannable(table.column(card.key)).to_numpy(zero_copy_only=False)
    return same & ~bad_keys, fingerprints


def find_changes(files: list[Path], card: Card, basis: Basis, *, batch_rows: int) -> Changes:
    """Compare every row of ``files`` with ``basis`` (one streamed pass; see the module docstring)."""
    columns = [card.key, *[c for c in card.columns if c != card.key]]
    forwarded: list[pa.Table] = []
    kept_hashes: list[np.ndarray] = []
    kept_fps: list[np.ndarray] = []
    all_hashes: list[np.ndarray] = []
    rows = 0
    for path in files:
        for table in iter_tables(path, columns, batch_rows=batch_rows):
            rows += table.num_rows
            hashes = key_hash(table.column(card.key))
            all_hashes.append(hashes)
            if not len(basis):
                forwarded.append(table)
                continue
            same, fingerprints = _matches(table, card, basis, hashes)
            forwarded.append(table.filter(pa.array(~same)) if same.any() else table)
            kept_hashes.append(hashes[same])
            kept_fps.append(fingerprints[same])
    unchanged = make_pairs(
        np.concatenate(kept_hashes) if kept_hashes else np.empty(0, np.int64),
        np.concatenate(kept_fps) if kept_fps else np.empty(0, np.int64),
    )
    duplicated = _duplicated(all_hashes)
    if len(duplicated) and len(unchanged):
        moving = np.isin(unchanged["key_hash"], duplicated)
        if moving.any():
            # Rare: a duplicated key matched the basis. Forward every occurrence (re-read them).
            unchanged = unchanged[~moving]
            forwarded = [t.filter(pc.invert(_has_hash(t, card, duplicated))) for t in forwarded]
            forwarded += [
                t.filter(_has_hash(t, card, duplicated))
                for path in files
                for t in iter_tables(path, columns, batch_rows=batch_rows)
            ]
    if forwarded:
        table = pa.concat_tables(forwarded, promote_options="permissive").combine_chunks()
    else:  # no row at all: an empty table of the input's columns
        schema = pq.read_schema(files[0]) if files else pa.schema([])
        table = pa.schema([schema.field(c) for c in columns if c in schema.names]).empty_table()
    return Changes(forwarded=table, unchanged=unchanged, rows=rows)


def _duplicated(hashes: list[np.ndarray]) -> np.ndarray:
    """Key hashes that occur more than once in the snapshot."""
    if not hashes:
        return np.empty(0, np.int64)
    ordered = np.sort(np.concatenate(hashes))
    repeats = ordered[1:][ordered[1:] == ordered[:-1]]
    return np.unique(repeats)


def _has_hash(table: pa.Table, card: Card, hashes: np.ndarray) -> pa.Array:
    return pa.array(np.isin(key_hash(table.column(card.key)), hashes))
