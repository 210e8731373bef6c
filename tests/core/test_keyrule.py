"""Every value a Parquet key column can carry is a valid key or a reject with a reason."""

from __future__ import annotations

import re

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.api.validation import check_key
from pipelines.cli import build_parser
from pipelines.core.keyrule import KEY_PATTERN, MAX_KEY_LENGTH, display, key_reason, key_reasons

VALID = st.from_regex(re.compile(KEY_PATTERN), fullmatch=True)
ANY_BYTES = st.one_of(st.none(), st.binary(max_size=300), st.text(max_size=300).map(str.encode))


def _string_array(values: list[bytes | None]) -> pa.Array:
    """A string array holding exactly these bytes (Parquet readers pass invalid UTF-8 through)."""
    binary = pa.array(values, pa.binary())
    return pa.Array.from_buffers(pa.string(), len(binary), binary.buffers(), binary.null_count)


@settings(max_examples=300, deadline=None)
@given(st.lists(ANY_BYTES, max_size=20))
def test_every_byte_string_is_a_valid_key_or_has_a_reason(values: list[bytes | None]) -> None:
    reasons = key_reasons(_string_array(values)).to_pylist()
    for raw, reason in zip(values, reasons, strict=True):
        assert reason == key_reason(raw)
        if reason is None:
            assert raw is not None and re.fullmatch(KEY_PATTERN, raw.decode())
        shown = display(raw)
        assert shown is None or ("\x00" not in shown and shown.encode("utf-8").decode() == shown)


@settings(max_examples=200, deadline=None)
@given(VALID)
def test_every_valid_key_passes_the_api_and_the_cli_unchanged(key: str) -> None:
    assert key_reason(key.encode()) is None
    assert check_key(key) == key
    args = build_parser().parse_args(["lookup", "--model", "m", "--", key])
    assert args.keys == [key]


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (None, "key is null"),
        (b"", "key is empty"),
        (b"ab\xffc", "key is not valid UTF-8"),
        (b"a\x00b", "key contains a control character (NUL, tab, newline, ...)"),
        (b"a\nb", "key contains a control character (NUL, tab, newline, ...)"),
        (b" ab", "key starts or ends with white space"),
        ("ab\u00a0".encode(), "key starts or ends with white space"),
        (b"x" * (MAX_KEY_LENGTH + 1), f"key is longer than {MAX_KEY_LENGTH} characters"),
        (b"a b", "key has a character outside A-Z a-z 0-9 _.:@/+=-"),
        ("caf\u00e9".encode(), "key has a character outside A-Z a-z 0-9 _.:@/+=-"),
    ],
)
def test_each_kind_of_bad_key_gets_its_own_reason(raw: bytes | None, reason: str) -> None:
    assert key_reasons(_string_array([raw])).to_pylist() == [reason]


def test_a_rejected_value_is_displayed_storably() -> None:
    assert display(b"a\x00b\xff") == "a\\x00b\\xff"
