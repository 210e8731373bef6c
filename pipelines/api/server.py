"""`predcache serve`: the lookup API under uvicorn (uvloop + httptools when installed)."""

from __future__ import annotations

import os

from starlette.applications import Starlette

from pipelines.api.app import create_app, prepare_database
from pipelines.settings import Settings

GRACEFUL_SHUTDOWN_S = 10
_ENV_PREFIX = "PREDCACHE_"


def settings_env(settings: Settings) -> dict[str, str]:
    """``settings`` as PREDCACHE_* variables, from which Settings() rebuilds an equal object."""
    env = {}
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if value is not None:
            env[f"{_ENV_PREFIX}{name.upper()}"] = str(value)
    return env


def app_from_environment() -> Starlette:
    """uvicorn's factory in each worker process (``--workers`` > 1): settings come from the environment."""
    return create_app(Settings())


def serve(settings: Settings, *, host: str, port: int, workers: int) -> None:
    """Serve the API until interrupted.

    Args:
        settings: database URL (or embedded home), API keys.
        host: interface to bind (127.0.0.1 by default in the CLI; 0.0.0.0 to expose it).
        port: TCP port.
        workers: uvicorn worker processes; each has its own pool of connections.
    """
    import uvicorn

    options = {
        "host": host,
        "port": port,
        "lifespan": "on",
        "access_log": False,  # /metrics counts every request; a log line each costs CPU the lookups need
        "timeout_graceful_shutdown": GRACEFUL_SHUTDOWN_S,
        "log_level": "info",
    }
    # Resolve the database here, before uvicorn: a wrong URL is one line from the CLI, not a
    # lifespan traceback, and the embedded server starts once for every worker.
    settings = settings.model_copy(update={"database_url": prepare_database(settings)})
    if workers == 1:
        uvicorn.run(create_app(settings), **options)  # type: ignore[arg-type]
        return
    # Workers are fresh processes that import the app by name: hand them the settings through
    # the environment.
    os.environ.update(settings_env(settings))
    uvicorn.run("pipelines.api.server:app_from_environment", factory=True, workers=workers, **options)  # type: ignore[arg-type]
