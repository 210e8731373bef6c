"""core/card.py: a card is read strictly, and its artifacts are checked against their sha256."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from pipelines.core.card import load_card, verify_artifact
from pipelines.errors import ModelCardError


@pytest.fixture()
def version_dir(tmp_path: Path, toy_model_builder: Callable[..., Path]) -> Path:
    return toy_model_builder(tmp_path / "models")


def _rewrite(version_dir: Path, change: Callable[[dict[str, object]], None]) -> None:
    path = version_dir / "card.json"
    card = json.loads(path.read_text())
    change(card)
    path.write_text(json.dumps(card))


def test_a_valid_card_loads_with_its_inputs_and_signature(version_dir: Path) -> None:
    card = load_card(version_dir)
    assert (card.name, card.version, card.key, card.input_names) == ("toy", "1", "id", ["x", "n"])
    assert card.signature_file() == "model.onnx"


def test_a_missing_card_says_to_rebuild_the_model(tmp_path: Path) -> None:
    with pytest.raises(ModelCardError, match=r"card.json is missing; rebuild the model"):
        load_card(tmp_path)


def test_a_card_that_is_not_json_names_the_line(version_dir: Path) -> None:
    (version_dir / "card.json").write_text('{"name": "toy",\n  oops}')
    with pytest.raises(ModelCardError, match=r"is not valid JSON \(.* at line 2\)"):
        load_card(version_dir)


def test_an_unknown_field_is_refused_with_its_place(version_dir: Path) -> None:
    _rewrite(version_dir, lambda card: card["inputs"][0].update(scale=2))  # type: ignore[index]
    with pytest.raises(ModelCardError, match=r"is not a valid card: inputs.0.scale: Extra inputs"):
        load_card(version_dir)


def test_a_card_without_a_score_output_is_refused(version_dir: Path) -> None:
    _rewrite(version_dir, lambda card: card.update(outputs=[{"name": "label", "dtype": "int64"}]))
    with pytest.raises(ModelCardError, match="the score output 'score' is not among the outputs"):
        load_card(version_dir)


def test_an_unknown_signature_lists_the_ones_the_card_has(version_dir: Path) -> None:
    with pytest.raises(ModelCardError, match=r"toy/1 has no signature 'fast'; it has: default"):
        load_card(version_dir).signature_file("fast")


def test_an_artifact_changed_after_the_build_is_refused_with_both_checksums(version_dir: Path) -> None:
    card = load_card(version_dir)
    assert verify_artifact(card, version_dir, "model.onnx") == version_dir / "model.onnx"
    with (version_dir / "model.onnx").open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(
        ModelCardError, match=r"model.onnx has sha256 \w{12}…, the card says \w{12}…; .* rebuild"
    ):
        verify_artifact(card, version_dir, "model.onnx")


def test_a_missing_or_unlisted_artifact_is_refused(version_dir: Path) -> None:
    card = load_card(version_dir)
    with pytest.raises(ModelCardError, match="card lists no sha256 for extra.onnx"):
        verify_artifact(card, version_dir, "extra.onnx")
    (version_dir / "model.onnx").unlink()
    with pytest.raises(ModelCardError, match=r"artifact .*model.onnx is missing"):
        verify_artifact(card, version_dir, "model.onnx")
