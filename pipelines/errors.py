"""One error hierarchy. Every message says what was wrong and what to do about it."""

from __future__ import annotations


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


class RunStateError(PredcacheError):
    """A run is not in a state that allows the requested step."""


class EngineError(PredcacheError):
    """The execution engine (Beam, Spark) failed or is unavailable."""


class RejectThresholdError(PredcacheError):
    """More rows were rejected than the run allows."""
