"""Input checks of the lookup API: keys, model names, batch bodies. Each failure is a RequestError."""

from __future__ import annotations

import json
import re
from typing import Any

from pipelines.api.errors import RequestError
from pipelines.core.keyrule import KEY_PATTERN, MAX_KEY_LENGTH

# KEY_PATTERN is the store's key rule (pipelines.core.keyrule): the API accepts exactly the
# keys a run can store, so every stored key can be looked up.

#: Model names are folder names under models/.
MODEL_PATTERN = r"^[A-Za-z0-9_.-]{1,128}$"
#: Documented maximum keys per batchGet request.
MAX_BATCH_KEYS = 1000
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


def parse_batch(body: bytes) -> list[str]:
    """The keys of a batchGet body ``{"keys": [...]}``, in request order (duplicates kept).

    Raises:
        RequestError: not JSON, not that shape, no keys, more than MAX_BATCH_KEYS, or a bad key.
    """
    try:
        data: Any = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise RequestError('the body is not valid JSON; send {"keys": ["key1", "key2"]}') from None
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise RequestError('the body must be a JSON object {"keys": [...]} with a list of key strings')
    extra = sorted(set(data) - {"keys"})
    if extra:
        raise RequestError(f"unknown field(s) {', '.join(map(repr, extra))[:200]}; the body has only 'keys'")
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
    return keys
