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
InputDType = Literal["string", "int64", "int32", "float32", "float64", "bool"]
#: Element types of a stored output (numpy names; "string" for tensor(string)).
OutputDType = Literal[
    "float32",
    "float64",
    "float16",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "bool",
    "string",
]
#: The batch dimension in a card's shapes.
BATCH = "N"
Shape = list[int | str]


def _column_shape() -> Shape:
    return [BATCH, 1]


def _vector_shape() -> Shape:
    return [BATCH]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputSpec(_Strict):
    """One graph input and how it is fed.

    ``shape`` is ``["N"]``, ``["N", 1]`` (the default) or ``["N", K]``. An input is fed from the
    column of the same name (a scalar column for ``[N]``/``[N, 1]``, a list column of exactly K
    values for ``[N, K]``), or, when ``columns`` is set, from those K scalar columns stacked in order.
    """

    name: str
    dtype: InputDType
    shape: Shape = Field(default_factory=_column_shape)
    columns: list[str] | None = None
    description: str = ""

    @property
    def width(self) -> int | None:
        """K of an ``[N, K]`` input, 1 for ``[N, 1]``, None for ``[N]``."""
        return int(self.shape[1]) if len(self.shape) == 2 else None

    @property
    def is_list(self) -> bool:
        """Fed from one list column (``[N, K]`` with K > 1 and no ``columns``)."""
        return self.columns is None and (self.width or 1) > 1

    @property
    def source_columns(self) -> list[str]:
        return list(self.columns) if self.columns is not None else [self.name]


class OutputSpec(_Strict):
    """One graph output, stored per key: shape ``["N"]``, ``["N", 1]`` or ``["N", K]``."""

    name: str
    dtype: OutputDType
    shape: Shape = Field(default_factory=_vector_shape)
    description: str = ""

    @property
    def width(self) -> int | None:
        """K of an ``[N, K]`` output with K > 1 (stored as a list), else None (stored as a scalar)."""
        return int(self.shape[1]) if len(self.shape) == 2 and int(self.shape[1]) > 1 else None


class ScoreSpec(_Strict):
    """Which output (or element of it) is the typed ``score`` column.

    ``index`` picks one column of an ``[N, K]`` output; ``reduce="max"`` takes the row maximum.
    """

    output: str
    index: int | None = None
    reduce: Literal["max"] | None = None

    def describe(self) -> str:
        """The ``--score`` text: ``OUTPUT``, ``OUTPUT:INDEX`` or ``OUTPUT:max``."""
        if self.index is not None:
            return f"{self.output}:{self.index}"
        if self.reduce is not None:
            return f"{self.output}:{self.reduce}"
        return self.output


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
    score: ScoreSpec | None = Field(
        default=None, description="The typed score column; None: the output named 'score'."
    )
    label: str | None = Field(
        default=None, description="Integer [N] output stored as the typed label column; None: 'label' if any."
    )
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
        """The graph inputs' names."""
        return [spec.name for spec in self.inputs]

    @property
    def columns(self) -> list[str]:
        """Every input data column the model reads (key excluded), in card order, once each."""
        seen: dict[str, None] = {}
        for spec in self.inputs:
            for column in spec.source_columns:
                if column != self.key:
                    seen.setdefault(column, None)
        return list(seen)

    @property
    def scalar_columns(self) -> list[str]:
        """The data columns holding one value per row (those get reference statistics)."""
        lists = {spec.name for spec in self.inputs if spec.is_list}
        return [c for c in self.columns if c not in lists]

    @property
    def score_spec(self) -> ScoreSpec:
        """The score designation (legacy cards: the output named ``score``)."""
        return self.score if self.score is not None else ScoreSpec(output="score")

    @property
    def label_output(self) -> str | None:
        """The output stored as the typed ``label`` column, if any."""
        if self.label is not None:
            return self.label
        return "label" if any(o.name == "label" for o in self.outputs) else None

    def output(self, name: str) -> OutputSpec:
        for spec in self.outputs:
            if spec.name == name:
                return spec
        raise ModelCardError(f"model {self.name}/{self.version} has no output '{name}'")

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
    names = {out.name for out in card.outputs}
    score = card.score_spec
    if score.output not in names:
        raise ModelCardError(
            f"{path}: the score output '{score.output}' is not among the outputs {sorted(names)}; "
            "re-import the model with --score"
        )
    if card.label_output is not None and card.label_output not in names:
        raise ModelCardError(f"{path}: the label output '{card.label_output}' is not an output")
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
