"""One error hierarchy. Every message says what was wrong and what to do about it."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError


class PredcacheError(Exception):
    """Root of every error predcache raises on purpose (CLI prints it as one line)."""

    exit_code = 2


class ConfigError(PredcacheError):
    """A setting is missing or invalid."""


class UnknownModelError(PredcacheError):
    """The model (or model version) is not in the models directory."""

    def __init__(self, model: str, *, available: list[str], version: str | None = None) -> None:
        what = f"model '{model}'" if version is None else f"version '{version}' of model '{model}'"
        choices = ", ".join(available) if available else "none"
        super().__init__(f"unknown {what}; available: {choices} (see `predcache models list`)")


class ModelCardError(PredcacheError):
    """A model card disagrees with its ONNX artifacts or is malformed."""


class InputError(PredcacheError):
    """The input cannot be read or does not match the model's schema as a whole."""


class StoreError(PredcacheError):
    """The PostgreSQL cache refused or could not do what was asked."""

    #: True when the same call may succeed if tried again (connection lost, lock timeout).
    retryable = False


class TransientStoreError(StoreError):
    """The database was briefly unavailable or busy (broken connection, lock timeout): retry."""

    retryable = True


class RowDataError(StoreError):
    """The database refused a value of one row: retrying cannot help; the row must change."""


class MigrationError(StoreError):
    """The cache's schema and the shipped migrations disagree (edited, missing or newer migrations)."""


class RunStateError(PredcacheError):
    """A run is not in a state that allows the requested step."""


class EngineError(PredcacheError):
    """The execution engine (Beam, Spark) failed or is unavailable."""


class AirflowError(PredcacheError):
    """The local Airflow (`predcache airflow`) did not start or a component of it stopped."""


class RejectThresholdError(PredcacheError):
    """More rows were rejected than the run allows."""


def flat_message(exc: BaseException, *, limit: int = 500) -> str:
    """All of ``exc``'s message on one line (drivers put the cause's detail on later lines).

    For database drivers, whose first line says what failed and later lines (DETAIL, HINT, the
    host tried) say why; :func:`one_line` suits tracebacks, where the last error line is the cause.
    """
    return (" ".join(str(exc).split()) or type(exc).__name__)[:limit]


def first_invalid(exc: ValidationError) -> str:
    """``where: what`` of the first problem pydantic found (e.g. ``inputs.0.scale: Extra inputs ...``)."""
    first = exc.errors()[0]
    return f"{'.'.join(str(part) for part in first['loc'])}: {first['msg']}"


def one_line(exc: BaseException, *, limit: int = 500) -> str:
    """The most telling line of ``exc``'s message, for one-line errors.

    Engines and drivers wrap the real cause in tracebacks: prefer the last line that names an
    error, else the last non-empty line, else the exception's type (never an empty string).
    """
    lines = [" ".join(line.split()) for line in str(exc).splitlines() if line.strip()]
    for line in reversed(lines):
        if "Error:" in line or "Exception:" in line:
            return line[:limit]
    return (lines[-1] if lines else type(exc).__name__)[:limit]
