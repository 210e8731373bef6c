"""Where predcache finds the files it ships (SQL migrations, the reference model, DAG config).

Every lookup of a shipped file goes through here, so an installed wheel and a source checkout
find the same things (issue 15 maps them into the package at build time).
"""

from __future__ import annotations

from pathlib import Path

_CHECKOUT = Path(__file__).resolve().parent.parent


def sql_dir() -> Path:
    """The folder of ordered ``NNN_name.sql`` migrations."""
    return _CHECKOUT / "sql"


def bundled_models_dir() -> Path:
    """The folder of models that ship with predcache (the reference model)."""
    return _CHECKOUT / "models"


def dags_dir() -> Path:
    """The folder of the Airflow DAG files (``predcache_dags.py`` and its config)."""
    return _CHECKOUT / "dags"
