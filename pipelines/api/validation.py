"""Input checks of the lookup API: keys, model names, batch and compute bodies (RequestError each)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from pipelines.api.errors import RequestError, TooManyRowsError, UnprocessableRowsError
from pipelines.core.keyrule import KEY_PATTERN, MAX_KEY_LENGTH

# KEY_PATTERN is the store's key rule (pipelines.core.keyrule): the API accepts exactly the
# keys a run can store, so every stored key can be looked up.

#: Model names are folder names under models/.
MODEL_PATTERN = r"^[A-Za-z0-9_.-]{1,128}$"
#: Documented maximum keys per batchGet request.
MAX_BATCH_KEYS = 1000
#: Maximum rows per online compute request (and per batchGet's fallback rows).
MAX_COMPUTE_ROWS = 1000
#: Largest accepted request body: a full batch of maximum-length keys fits with room to spare.
MAX_BODY_BYTES = 512 * 1024

_KEY = re.compile(KEY_PATTERN)
_MODEL = re.compile(MODEL_PATTERN)


def check_key(key: str, *, where: str = "key") -> str:
    """Return ``key`` if it is a valid key.

    Raises:
        RequestError: too long, empty, or a character outside KEY_PATTERN.
    """
    if _KEY.fullmatch(key):
        return key
    if not key:
        raise RequestError(f"{where} is empty; send a key of 1 to {MAX_KEY_LENGTH} characters")
    if len(key) > MAX_KEY_LENGTH:
        raise RequestError(f"{where} has {len(key)} characters; keys have at most {MAX_KEY_LENGTH}")
    raise RequestError(f"{where} has a character outside A-Z a-z 0-9 _ . : @ / + = -; fix the key")


def check_model(model: str) -> str:
    """Return ``model`` if it is a valid model name.

    Raises:
        RequestError: a character outside MODEL_PATTERN or longer than 128 characters.
    """
    if _MODEL.fullmatch(model):
        return model
    raise RequestError("model names are 1 to 128 characters of A-Z a-z 0-9 _ . -; see GET /v1/models")


def _json_object(body: bytes, example: str) -> dict[str, Any]:
    try:
        data: Any = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise RequestError(f"the body is not valid JSON; send {example}") from None
    if not isinstance(data, dict):
        raise RequestError(f"the body must be a JSON object: {example}")
    return data


def _check_fields(data: dict[str, Any], allowed: set[str]) -> None:
    extra = sorted(set(data) - allowed)
    if extra:
        names = " and ".join(repr(name) for name in sorted(allowed))
        raise RequestError(f"unknown field(s) {', '.join(map(repr, extra))[:200]}; the body has only {names}")


def parse_rows(rows: Any, *, where: str = "rows") -> list[dict[str, Any]]:
    """Rows for online scoring: objects with a valid, unique ``key``; at most MAX_COMPUTE_ROWS.

    Raises:
        TooManyRowsError: more than MAX_COMPUTE_ROWS rows (422).
        UnprocessableRowsError: a row that is not an object, lacks a key, or repeats one (422).
        RequestError: a malformed key (400, as in lookups).
    """
    if not isinstance(rows, list) or not rows:
        raise UnprocessableRowsError(f"{where} must be a non-empty list of objects, each with a 'key'")
    if len(rows) > MAX_COMPUTE_ROWS:
        raise TooManyRowsError(len(rows), MAX_COMPUTE_ROWS)
    seen: dict[str, int] = {}
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise UnprocessableRowsError(f"{where}[{i}] is {type(row).__name__}; every row is a JSON object")
        key = row.get("key")
        if not isinstance(key, str):
            raise UnprocessableRowsError(f"{where}[{i}] has no string 'key'; every row carries its key")
        check_key(key, where=f"{where}[{i}].key")
        if key in seen:
            raise UnprocessableRowsError(
                f"{where}[{i}] repeats the key '{key}' of {where}[{seen[key]}]; send each key once"
            )
        seen[key] = i
    return rows


def parse_compute(body: bytes) -> list[dict[str, Any]]:
    """The rows of a compute body ``{"rows": [{"key": ..., <inputs>...}]}``, in request order."""
    data = _json_object(body, '{"rows": [{"key": "k1", "<input>": 1.0}]}')
    _check_fields(data, {"rows"})
    return parse_rows(data.get("rows"))


@dataclass(frozen=True)
class BatchRequest:
    """A batchGet body: keys in request order (duplicates kept) and optional rows for misses."""

    keys: list[str]
    rows: dict[str, dict[str, Any]]


def parse_batch(body: bytes) -> BatchRequest:
    """A batchGet body ``{"keys": [...], "rows": [...]?}``.

    ``rows`` (optional) carry the inputs of keys that may be missing from the cache; a missing
    key with a row is computed online.

    Raises:
        RequestError: not JSON, not that shape, no keys, more than MAX_BATCH_KEYS, or a bad key;
            rows as in ``parse_rows`` (and each row's key must be among ``keys``).
    """
    data = _json_object(body, '{"keys": ["key1", "key2"]}')
    if not isinstance(data.get("keys"), list):
        raise RequestError('the body must be a JSON object {"keys": [...]} with a list of key strings')
    _check_fields(data, {"keys", "rows"})
    keys: list[Any] = data["keys"]
    if not keys:
        raise RequestError(f"keys is empty; send 1 to {MAX_BATCH_KEYS} keys")
    if len(keys) > MAX_BATCH_KEYS:
        raise RequestError(
            f"{len(keys)} keys in one batchGet; the maximum is {MAX_BATCH_KEYS}: split the batch"
        )
    for i, key in enumerate(keys):
        if not isinstance(key, str):
            raise RequestError(f"keys[{i}] is {type(key).__name__}; every key is a string")
        check_key(key, where=f"keys[{i}]")
    rows: dict[str, dict[str, Any]] = {}
    if "rows" in data:
        wanted = set(keys)
        for i, row in enumerate(parse_rows(data["rows"])):
            if row["key"] not in wanted:
                raise UnprocessableRowsError(f"rows[{i}] has key '{row['key']}', which is not in keys")
            rows[row["key"]] = row
    return BatchRequest(keys=keys, rows=rows)
