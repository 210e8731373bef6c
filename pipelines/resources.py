"""Where predcache finds the files it ships (SQL migrations, the reference model, DAG files).

Every lookup of a shipped file goes through here, so an installed wheel and a source checkout
find the same things. In a checkout they are the top-level ``sql/``, ``models/`` and ``dags/``
folders; the build (``setup.py``) copies the same files into the package as
``pipelines/_shipped/{sql,models,dags}``, which is where an installed predcache reads them.
A checkout wins when both exist, so an editable install sees edits without a rebuild.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from importlib.resources import files
from pathlib import Path

from pipelines.errors import ConfigError

_CHECKOUT = Path(__file__).resolve().parent.parent
#: The package folder that holds the shipped files in a built wheel or sdist install.
SHIPPED = "_shipped"
#: Shipped file groups: the folder name in a checkout and under ``pipelines/_shipped``.
SQL, MODELS, DAGS = "sql", "models", "dags"
#: The DAG config template (copy it beside the DAG file, or point PREDCACHE_DAGS_CONFIG at it).
DAGS_CONFIG = "predcache_dags.yaml"


def in_checkout() -> bool:
    """True when ``pipelines`` is imported from a source checkout (``setup.py`` and ``sql/`` beside it)."""
    return (_CHECKOUT / "setup.py").is_file() and (_CHECKOUT / SQL).is_dir()


def _shipped(group: str) -> Path:
    if in_checkout():
        return _CHECKOUT / group
    # A wheel installs into a real folder; a zip import (Spark's pyFiles) has no shipped files
    # and never reads them (executors get the model by broadcast), so no file access here.
    return Path(str(files("pipelines"))) / SHIPPED / group


def sql_dir() -> Path:
    """The folder of ordered ``NNN_name.sql`` migrations."""
    return _shipped(SQL)


def bundled_models_dir() -> Path:
    """The folder of models that ship with predcache (the reference model and its recipe)."""
    return _shipped(MODELS)


def dags_dir() -> Path:
    """The folder of the Airflow DAG file and its config template (``dags/`` of a checkout)."""
    return _shipped(DAGS)


def dags_config_template() -> Path:
    """The shipped ``predcache_dags.yaml``."""
    return dags_dir() / DAGS_CONFIG


def default_models_dir(home: Path) -> Path:
    """Where models live when ``PREDCACHE_MODELS_DIR`` is unset.

    A checkout's ``models/`` (edits and builds land in the repository); an installed predcache
    uses ``home/models``, a writable folder seeded with the bundled models (see ``seed_models``),
    because the package folder may be read-only and is replaced by every upgrade.
    """
    return _CHECKOUT / MODELS if in_checkout() else home / MODELS


def seed_models(models_dir: Path, *, source: Path | None = None) -> list[str]:
    """Copy each bundled model version (and recipe) missing from ``models_dir``; returns what was copied.

    A version folder is immutable, so an existing one is never touched; a copy is staged and
    renamed into place, so concurrent first runs do not see half a version.

    Raises:
        ConfigError: ``models_dir`` cannot be written.
    """
    source = source or bundled_models_dir()
    copied: list[str] = []
    if not source.is_dir() or source.resolve() == models_dir.resolve():
        return copied
    try:
        for model in sorted(p for p in source.iterdir() if p.is_dir()):
            target_model = models_dir / model.name
            target_model.mkdir(parents=True, exist_ok=True)
            for entry in sorted(model.iterdir()):
                if entry.name == "__pycache__" or (target_model / entry.name).exists():
                    continue
                if entry.is_file():
                    shutil.copy2(entry, target_model / entry.name)
                    continue
                staging = Path(tempfile.mkdtemp(prefix=f".{entry.name}-", dir=target_model))
                shutil.copytree(entry, staging, dirs_exist_ok=True)
                try:
                    os.rename(staging, target_model / entry.name)
                except OSError:  # another process seeded it first
                    shutil.rmtree(staging, ignore_errors=True)
                    continue
                copied.append(f"{model.name}/{entry.name}")
    except OSError as exc:
        raise ConfigError(
            f"cannot seed the models folder {models_dir} with the bundled models ({exc.strerror or exc}); "
            "set PREDCACHE_MODELS_DIR or PREDCACHE_HOME to a writable folder"
        ) from exc
    return copied
