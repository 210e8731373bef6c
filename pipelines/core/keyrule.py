"""The one rule for keys: what the cache stores is exactly what every reader can ask for.

A key is 1 to 256 characters of ASCII letters, digits and ``_ . : @ / + = -`` (flight ids,
numeric ids, UUIDs, e-mail addresses, base64, path-like SKUs). The lookup API accepts
exactly these keys (``pipelines.api.validation`` uses this pattern), so every stored key
round-trips unchanged through the CLI (``predcache lookup --model M -- KEY``), SQL (the
``text COLLATE "C"`` column compares bytes) and HTTP (no character needs escaping in a URL
path or JSON). Any other value a Parquet string column can carry -- null, empty, invalid
UTF-8, NUL and other control characters, surrounding white space, other characters, over-
long -- is rejected with a reason that names the problem; keys are never altered.

Rejected values are stored for diagnosis in ``rejects`` (a ``text`` column and a ``jsonb``
row), which cannot hold NUL or invalid UTF-8: ``display`` renders such values visibly.
"""

from __future__ import annotations

import re

import pyarrow as pa
import pyarrow.compute as pc

MAX_KEY_LENGTH = 256
KEY_CHARACTERS = "A-Za-z0-9_.:@/+=-"
#: Allowed key characters, 1 to MAX_KEY_LENGTH of them (RE2 and Python ``re`` syntax).
KEY_PATTERN = rf"^[{KEY_CHARACTERS}]{{1,{MAX_KEY_LENGTH}}}$"
#: Longest rendering of a rejected value kept in ``rejects`` (a reject stores what it can show).
MAX_DISPLAY_CHARS = 1024

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_OUTSIDE = re.compile(rf"[^{KEY_CHARACTERS}]")
_ALPHABET_ONLY = rf"^[{KEY_CHARACTERS}]+$"


def key_reason(raw: bytes | None, *, max_length: int = MAX_KEY_LENGTH) -> str | None:
    """Why ``raw`` (a key's UTF-8 bytes, None for null) is not a valid key; None if it is."""
    if raw is None:
        return "key is null"
    if not raw:
        return "key is empty"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return "key is not valid UTF-8"
    if _CONTROL.search(text):
        return "key contains a control character (NUL, tab, newline, ...)"
    if text != text.strip():
        return "key starts or ends with white space"
    if len(text) > max_length:
        return f"key is longer than {max_length} characters"
    if _OUTSIDE.search(text):
        return f"key has a character outside {KEY_CHARACTERS.replace('A-Za-z0-9', 'A-Z a-z 0-9 ')}"
    return None


def key_reasons(keys: pa.Array, *, max_length: int = MAX_KEY_LENGTH) -> pa.Array:
    """Per key (string array, may hold invalid UTF-8): the reason it is invalid, or null.

    The rule runs vectorized over every key; only keys that fail it are looked at one by
    one, to name their problem. It runs as ``[alphabet]+`` and a byte length of at most
    ``max_length`` (the alphabet is ASCII: bytes are characters), not as the counted pattern:
    RE2 compiles ``{1,256}`` into 256 states on every call, 1.7 ms per call measured, which
    was the largest single cost of scoring one row online.
    """
    alphabet = pc.match_substring_regex(keys, _ALPHABET_ONLY)
    short = pc.less_equal(pc.binary_length(keys), max_length)
    good = pc.fill_null(pc.and_(alphabet, short), False)
    bad = pc.indices_nonzero(pc.invert(good)).to_pylist()
    reasons: list[str | None] = [None] * len(keys)
    if bad:
        raw = keys.cast(pa.binary()).take(pa.array(bad, pa.int64())).to_pylist()
        for index, value in zip(bad, raw, strict=True):
            reasons[index] = key_reason(value, max_length=max_length) or "key does not match the key rule"
    return pa.array(reasons, pa.string())


def display(raw: bytes | str | int | None) -> str | None:
    """``raw`` as text ``rejects`` can store: invalid UTF-8 as ``\\xNN``, NUL as ``\\x00``, capped.

    Integer keys are shown as their decimal text (how they are stored).
    """
    if raw is None:
        return None
    if isinstance(raw, int):
        return str(raw)
    text = raw.decode("utf-8", "backslashreplace") if isinstance(raw, bytes) else raw
    text = text.replace("\x00", "\\x00")
    return text if len(text) <= MAX_DISPLAY_CHARS else text[:MAX_DISPLAY_CHARS] + "…"
