"""Arrow table -> PostgreSQL ``COPY ... (FORMAT binary)`` payload, built by Arrow kernels.

Binary COPY spares the client the text formatting and the server the text parsing of every
number (measured in ``benchmarks/simple_pipeline.py``). Each row of the payload is the
concatenation of its fields (``int16`` field count, then per field an ``int32`` length and the
bytes). The encoder lays every run of fixed-width fields out as one numpy byte matrix, then joins
those matrices and the variable-width (text) columns row by row with one Arrow kernel
(``binary_join_element_wise``): the joined array's data buffer is the payload. No per-row Python.

Supported Arrow types: int32 (int4), int64 (int8), float32 (real), float64 (double precision),
bool, string / large_string (text, or jsonb for the columns named in ``jsonb_columns``).
Nulls become the field length -1.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
TRAILER = b"\xff\xff"
#: Arrow type -> numpy big-endian dtype of the field's bytes.
_FIXED: dict[pa.DataType, str] = {
    pa.int32(): ">i4",
    pa.int64(): ">i8",
    pa.float32(): ">f4",
    pa.float64(): ">f8",
    pa.bool_(): "u1",
}
_NULL_LENGTH = b"\xff\xff\xff\xff"


def _be(values: np.ndarray, dtype: str) -> np.ndarray:
    """(n, width) uint8 matrix of ``values`` in ``dtype`` (big-endian)."""
    raw = np.ascontiguousarray(np.asarray(values).astype(dtype, copy=False))
    return raw.view(np.uint8).reshape(len(raw), -1)


def _binary(matrix: np.ndarray) -> pa.Array:
    """A binary array whose row i holds the bytes of ``matrix[i]``."""
    n, width = matrix.shape
    offsets = np.arange(n + 1, dtype=np.int32) * np.int32(width)
    data = pa.py_buffer(np.ascontiguousarray(matrix).reshape(-1))
    return pa.Array.from_buffers(pa.binary(), n, [None, pa.py_buffer(offsets), data])


def _fixed_field(column: pa.Array) -> np.ndarray:
    """(n, 4 + width) matrix: length, then the big-endian value (nulls are handled by the caller)."""
    dtype = _FIXED[column.type]
    if column.type == pa.bool_():
        values = np.asarray(column.fill_null(False).to_numpy(zero_copy_only=False), dtype=np.uint8)
    else:
        values = (
            column.fill_null(0).to_numpy(zero_copy_only=False) if column.null_count else column.to_numpy()
        )
    raw = _be(values, dtype)
    length = _be(np.full(len(column), raw.shape[1], np.int32), ">i4")
    return np.concatenate([length, raw], axis=1)


def _text_field(column: pa.Array, *, jsonb: bool) -> tuple[np.ndarray, pa.Array]:
    """(n, 4) matrix of the field lengths, and the field bytes as binary (nulls: empty)."""
    large = pa.types.is_large_string(column.type)
    data = column.cast(pa.large_binary() if large else pa.binary())
    if jsonb:  # binary jsonb: a version byte (1), then the JSON text
        version = pa.scalar(b"\x01", data.type)
        data = pc.binary_join_element_wise(version, data, pa.scalar(b"", data.type))
    lengths = pc.binary_length(data).fill_null(-1).to_numpy().astype(np.int64)
    return _be(lengths, ">i4"), data.fill_null(b"") if data.null_count else data


def _flush(segments: list[pa.Array], block: list[np.ndarray]) -> None:
    """Append the fixed-width ``block`` (if any bytes) to ``segments`` as one binary array; empty it."""
    if block and sum(part.shape[1] for part in block):
        segments.append(_binary(np.concatenate(block, axis=1)))
    block.clear()


def encode(table: pa.Table, *, jsonb_columns: frozenset[str] = frozenset()) -> bytes:
    """The binary COPY payload (header, one tuple per row, trailer) of ``table``'s columns in order.

    Args:
        table: the rows; column order must match the COPY's column list.
        jsonb_columns: string columns that load into ``jsonb`` columns.

    Raises:
        TypeError: a column type the encoder does not support.
    """
    n = table.num_rows
    if n == 0:
        return HEADER + TRAILER
    segments: list[pa.Array] = []
    block: list[np.ndarray] = [_be(np.full(n, table.num_columns, np.int16), ">i2")]
    for name, chunked in zip(table.column_names, table.columns, strict=True):
        column = chunked.combine_chunks() if chunked.num_chunks != 1 else chunked.chunk(0)
        if column.type in _FIXED:
            field = _fixed_field(column)
            if column.null_count == 0:
                block.append(field)
                continue
            # A null fixed-width field has no value bytes: its rows differ in width.
            _flush(segments, block)
            segments.append(
                pc.if_else(pc.is_valid(column), _binary(field), pa.scalar(_NULL_LENGTH, pa.binary()))
            )
        elif pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            prefix, text = _text_field(column, jsonb=name in jsonb_columns)
            block.append(prefix)
            _flush(segments, block)
            segments.append(text)
        else:
            raise TypeError(f"binary COPY cannot encode column {name} of type {column.type}")
    _flush(segments, block)
    segments = [s.cast(pa.large_binary()) for s in segments] if len(segments) > 1 else segments
    joined = (
        pc.binary_join_element_wise(*segments, pa.scalar(b"", pa.large_binary()))
        if len(segments) > 1
        else segments[0]
    )
    offsets_type = np.int64 if pa.types.is_large_binary(joined.type) else np.int32
    _, offsets_buf, data_buf = joined.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=offsets_type)
    start, stop = int(offsets[joined.offset]), int(offsets[joined.offset + n])
    return HEADER + memoryview(data_buf)[start:stop].tobytes() + TRAILER
