"""Which output is the typed ``score`` (``--score`` or the default rule) and which is the ``label``."""

from __future__ import annotations

from pipelines.core.card import OutputSpec, ScoreSpec
from pipelines.errors import ModelCardError

_FLOAT_DTYPES = ("float32", "float64", "float16")
_INT_DTYPES = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")


def parse_score(text: str, outputs: list[OutputSpec]) -> ScoreSpec:
    """``OUTPUT``, ``OUTPUT:INDEX`` or ``OUTPUT:max`` checked against the outputs.

    Raises:
        ModelCardError: no such output, an index out of range, or a non-numeric output.
    """
    name, _, part = text.partition(":")
    by_name = {spec.name: spec for spec in outputs}
    spec = by_name.get(name)
    if spec is None:
        raise ModelCardError(f"--score names output '{name}'; the graph's outputs are {', '.join(by_name)}")
    if spec.dtype in ("string", "bool"):
        raise ModelCardError(f"--score {text}: output '{name}' holds {spec.dtype} values, not numbers")
    width = spec.width
    if part == "":
        if width is not None:
            raise ModelCardError(
                f"--score {text}: output '{name}' has {width} columns; name one ({name}:INDEX) or {name}:max"
            )
        return ScoreSpec(output=name)
    if part == "max":
        return ScoreSpec(output=name, reduce="max")
    if not part.isdigit() or int(part) >= (width or 1):
        raise ModelCardError(
            f"--score {text}: index {part} is out of range; output '{name}' has {width or 1} column(s)"
        )
    return ScoreSpec(output=name, index=int(part)) if width is not None else ScoreSpec(output=name)


def default_score(outputs: list[OutputSpec]) -> ScoreSpec:
    """The only float ``[N]``/``[N, 1]`` output, else column 1 of an ``[N, 2]`` probability output,
    else the row max of an ``[N, K]`` one.

    Raises:
        ModelCardError: none of these, or more than one candidate: pass ``--score``.
    """
    floats = [spec for spec in outputs if spec.dtype in _FLOAT_DTYPES]
    scalar = [spec for spec in floats if spec.width is None]
    names = ", ".join(f"{s.name} {s.dtype}{s.shape}" for s in outputs)
    if len(scalar) == 1:
        return ScoreSpec(output=scalar[0].name)
    if not scalar:
        pairs = [spec for spec in floats if spec.width == 2]
        if len(pairs) == 1:
            return ScoreSpec(output=pairs[0].name, index=1)
        wide = [spec for spec in floats if spec.width is not None]
        if len(wide) == 1:
            return ScoreSpec(output=wide[0].name, reduce="max")
    raise ModelCardError(
        f"cannot tell which output is the score (outputs: {names}); pass --score OUTPUT, "
        "OUTPUT:INDEX or OUTPUT:max"
    )


def label_output(outputs: list[OutputSpec]) -> str | None:
    """The one integer ``[N]``/``[N, 1]`` output (a classifier's predicted class), if exactly one."""
    found = [spec.name for spec in outputs if spec.dtype in _INT_DTYPES and spec.width is None]
    return found[0] if len(found) == 1 else None
