"""Find a model's build recipe (``models/<name>/recipe.py``) and run it into a version folder.

A recipe is a Python file defining::

    def build(out_dir: Path, *, name: str, version: str, **options) -> Card

which writes ``card.json`` and the ONNX artifacts into ``out_dir``. It is loaded by file path, so
``models/`` needs no ``__init__.py`` and a recipe can live in any models folder. The build runs in a
staging folder beside the model folders; only a version whose card and artifacts check out replaces
the existing one, so a failed build never breaks a working model.
"""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from pipelines.core.card import load_card, verify_artifact
from pipelines.core.model import check_card_matches_session
from pipelines.errors import ModelCardError, UnknownModelError
from pipelines.modeling.gate import open_session

RECIPE_FILE = "recipe.py"
RECIPE_FUNCTION = "build"


def available_recipes(models_dir: Path) -> list[str]:
    """Names of the models under ``models_dir`` that have a recipe."""
    if not models_dir.is_dir():
        return []
    return sorted(p.name for p in models_dir.iterdir() if (p / RECIPE_FILE).is_file())


def load_recipe(name: str, models_dir: Path) -> ModuleType:
    """Import ``models_dir/<name>/recipe.py`` as a module.

    Raises:
        UnknownModelError: there is no such recipe.
        ModelCardError: the recipe defines no ``build`` function.
    """
    path = models_dir / name / RECIPE_FILE
    if not path.is_file():
        raise UnknownModelError(name, available=available_recipes(models_dir))
    spec = importlib.util.spec_from_file_location(f"predcache_recipe_{name}", path)
    if spec is None or spec.loader is None:
        raise ModelCardError(f"cannot import {path}; it must be a Python file")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not callable(getattr(module, RECIPE_FUNCTION, None)):
        raise ModelCardError(
            f"{path} defines no `{RECIPE_FUNCTION}(out_dir, *, name, version)` function; add one"
        )
    return module


def build_model(
    name: str, models_dir: Path, *, version: str = "1", options: Mapping[str, Any] | None = None
) -> Path:
    """Build ``version`` of model ``name`` from its recipe into ``models_dir/<name>/<version>/``.

    Args:
        name: Model folder name under ``models_dir``.
        models_dir: The models folder.
        version: Version folder to (re)build.
        options: Keyword options passed to the recipe's ``build`` (e.g. a smaller training run).

    Returns:
        The version folder.

    Raises:
        UnknownModelError: ``models_dir/<name>/recipe.py`` does not exist.
        ModelCardError: the recipe wrote a card that disagrees with its artifacts.
    """
    recipe = load_recipe(name, models_dir)
    staging = models_dir / f".building-{name}-{version}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        getattr(recipe, RECIPE_FUNCTION)(staging, name=name, version=version, **dict(options or {}))
        _check_version(staging, name, version)
        final = models_dir / name / version
        _replace(final, staging)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


def _check_version(version_dir: Path, name: str, version: str) -> None:
    card = load_card(version_dir)
    if (card.name, card.version) != (name, version):
        raise ModelCardError(
            f"the recipe of {name} wrote a card for {card.name}/{card.version}; fix the recipe"
        )
    for file_name in sorted(set(card.signatures.values())):
        verify_artifact(card, version_dir, file_name)
        check_card_matches_session(card, open_session(version_dir / file_name), file_name)


def _replace(final: Path, staging: Path) -> None:
    # Beside the model folders, not inside one: a folder with a card.json inside counts as a version.
    retired = staging.with_name(staging.name.replace(".building-", ".replaced-", 1))
    shutil.rmtree(retired, ignore_errors=True)
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():
        final.rename(retired)
    staging.rename(final)
    shutil.rmtree(retired, ignore_errors=True)
