"""The model card: the contract between a model's build and every engine that scores it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipelines.errors import ModelCardError, first_invalid

CARD_FILE = "card.json"
DEFAULT_SIGNATURE = "default"

#: Input dtypes a card may declare, and the Arrow/numpy type each is fed to onnxruntime as.
InputDType = Literal["string", "int64", "float32"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputSpec(_Strict):
    """One model input: a column of the input data fed as an ONNX tensor of shape [N, 1]."""

    name: str
    dtype: InputDType
    description: str = ""


class OutputSpec(_Strict):
    """One ONNX output stored in the cache. ``score`` (float32) is required; ``label`` is optional."""

    name: Literal["score", "label"]
    dtype: Literal["float32", "int64"]
    description: str = ""


class Artifact(_Strict):
    sha256: str
    bytes: int


class QuantizationGate(_Strict):
    """The int8 vs fp32 comparison on a holdout the model did not train on."""

    passed: bool
    auc_fp32: float
    auc_int8: float
    auc_delta: float
    label_agreement: float
    int8_speedup: float
    thresholds: dict[str, float]
    reason: str


class Card(_Strict):
    """Everything a scorer needs to know about one model version (``card.json``)."""

    name: str
    version: str
    description: str = ""
    key: str = Field(description="Input column holding the unique key of each row.")
    inputs: list[InputSpec]
    outputs: list[OutputSpec]
    signatures: dict[str, str] = Field(description="Signature name -> ONNX file in the version folder.")
    artifacts: dict[str, Artifact]
    training: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    quantization: dict[str, Any] = Field(default_factory=dict)
    reference_stats: dict[str, Any] = Field(default_factory=dict)
    opset: int | None = None
    onnxruntime_version: str | None = None

    @property
    def input_names(self) -> list[str]:
        return [spec.name for spec in self.inputs]

    def signature_file(self, signature: str = DEFAULT_SIGNATURE) -> str:
        """The ONNX file name behind ``signature``.

        Raises:
            ModelCardError: the card has no such signature.
        """
        try:
            return self.signatures[signature]
        except KeyError:
            have = ", ".join(sorted(self.signatures))
            raise ModelCardError(
                f"model {self.name}/{self.version} has no signature '{signature}'; it has: {have}"
            ) from None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_card(version_dir: Path) -> Card:
    """Read and validate ``card.json`` in a model version folder.

    Raises:
        ModelCardError: the file is missing, not JSON, or not a valid card.
    """
    path = version_dir / CARD_FILE
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelCardError(f"{path} is missing; rebuild the model with `predcache models build`") from None
    except json.JSONDecodeError as exc:
        raise ModelCardError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})") from exc
    try:
        card = Card.model_validate(raw)
    except ValidationError as exc:
        raise ModelCardError(f"{path} is not a valid card: {first_invalid(exc)}") from exc
    if not any(out.name == "score" for out in card.outputs):
        raise ModelCardError(f"{path} declares no 'score' output; every model must output a float32 score")
    return card


def verify_artifact(card: Card, version_dir: Path, file_name: str) -> Path:
    """Check that an artifact exists and matches the sha256 the card records.

    Raises:
        ModelCardError: missing file, unknown to the card, or checksum mismatch.
    """
    path = version_dir / file_name
    expected = card.artifacts.get(file_name)
    if expected is None:
        raise ModelCardError(f"{card.name}/{card.version}: card lists no sha256 for {file_name}")
    if not path.is_file():
        raise ModelCardError(f"{card.name}/{card.version}: artifact {path} is missing")
    actual = sha256_file(path)
    if actual != expected.sha256:
        raise ModelCardError(
            f"{card.name}/{card.version}: {file_name} has sha256 {actual[:12]}…, the card says "
            f"{expected.sha256[:12]}…; the file changed after the build, rebuild the model"
        )
    return path
