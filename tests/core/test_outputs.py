"""Every output stored as JSON: shortest exact numbers, lists for [N, K], the typed score and label."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from pipelines.core.card import Card
from pipelines.core.outputs import encode_outputs, label_values, score_values
from pipelines.errors import ModelCardError


def _card(outputs: list[dict], score: dict | None = None, label: str | None = None) -> Card:
    return Card.model_validate(
        {
            "name": "m",
            "version": "1",
            "key": "id",
            "inputs": [{"name": "x", "dtype": "float32"}],
            "outputs": outputs,
            "score": score,
            "label": label,
            "signatures": {"default": "model.onnx"},
            "artifacts": {},
        }
    )


def test_float32_values_read_back_bit_for_bit() -> None:
    card = _card([{"name": "p", "dtype": "float32"}], {"output": "p"})
    values = np.random.default_rng(0).random(1000, dtype=np.float32) * np.float32(1e-3)
    texts = encode_outputs(card, {"p": values}, 1000).to_pylist()
    back = np.array([json.loads(t)["p"] for t in texts], dtype=np.float32)
    assert back.tobytes() == values.tobytes()


def test_k_wide_outputs_are_lists_and_every_element_type_is_json() -> None:
    outputs: list[dict[str, Any]] = [
        {"name": "scores", "dtype": "float64", "shape": ["N", 3]},
        {"name": "ids", "dtype": "int64", "shape": ["N", 3]},
        {"name": "flag", "dtype": "bool"},
        {"name": "name", "dtype": "string", "shape": ["N", 1]},
    ]
    card = _card(outputs, {"output": "scores", "reduce": "max"})
    values = {
        "scores": np.array([[0.1, 1 / 3, 2.5e-8], [1e300, -0.0, 7.0]]),
        "ids": np.array([[1, 2, 3], [2**62, -1, 0]]),
        "flag": np.array([True, False]),
        "name": np.array(['a"b', "é"], dtype=object),
    }
    rows = [json.loads(t) for t in encode_outputs(card, values, 2).to_pylist()]
    assert rows[0] == {"scores": [0.1, 1 / 3, 2.5e-8], "ids": [1, 2, 3], "flag": True, "name": 'a"b'}
    assert rows[1] == {"scores": [1e300, -0.0, 7.0], "ids": [2**62, -1, 0], "flag": False, "name": "é"}
    assert score_values(card, values).tolist() == [np.float32(1 / 3), np.float32(np.inf)]


def test_non_finite_floats_become_strings_json_can_hold() -> None:
    card = _card([{"name": "p", "dtype": "float32"}], {"output": "p"})
    texts = encode_outputs(card, {"p": np.array([np.nan, np.inf, -np.inf, 1], np.float32)}, 4).to_pylist()
    assert [json.loads(t)["p"] for t in texts] == ["NaN", "Infinity", "-Infinity", 1]


def test_score_index_picks_a_column_and_label_is_int64() -> None:
    card = _card(
        [{"name": "label", "dtype": "int32"}, {"name": "probs", "dtype": "float32", "shape": ["N", 2]}],
        {"output": "probs", "index": 1},
        "label",
    )
    values = {"label": np.array([0, 1], np.int32), "probs": np.array([[0.9, 0.1], [0.2, 0.8]], np.float32)}
    assert score_values(card, values).tolist() == [np.float32(0.1), np.float32(0.8)]
    labels = label_values(card, values)
    assert labels is not None and labels.dtype == np.int64 and labels.tolist() == [0, 1]


def test_a_wide_score_without_index_or_max_is_a_card_error() -> None:
    card = _card([{"name": "probs", "dtype": "float32", "shape": ["N", 2]}], {"output": "probs"})
    with pytest.raises(ModelCardError, match="index or 'max'"):
        score_values(card, {"probs": np.zeros((1, 2), np.float32)})
