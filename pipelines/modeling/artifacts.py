"""Writing a model version folder: ONNX files, their checksums, and the card."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from pipelines.core.card import CARD_FILE, Artifact, Card, sha256_file

if TYPE_CHECKING:
    import onnx

FP32_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"


def save_onnx(model: onnx.ModelProto, path: Path) -> Artifact:
    """Serialise ``model`` to ``path`` (deterministic bytes) and return its checksum entry."""
    path.write_bytes(model.SerializeToString(deterministic=True))
    return artifact(path)


def artifact(path: Path) -> Artifact:
    """The card's record of one file: sha256 and size."""
    return Artifact(sha256=sha256_file(path), bytes=path.stat().st_size)


def write_card(version_dir: Path, card: Card) -> Path:
    """Write ``card.json`` into ``version_dir``: the card's fields in their declared order, indented."""
    path = version_dir / CARD_FILE
    path.write_text(json.dumps(card.model_dump(mode="json"), indent=2) + "\n")
    return path
