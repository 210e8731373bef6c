"""`predcache serve`: the lookup API under uvicorn (uvloop + httptools when installed)."""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import sys
from types import FrameType

from starlette.applications import Starlette

from pipelines.api.app import create_app, parse_api_keys, prepare_database
from pipelines.errors import ConfigError
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


def is_loopback(host: str) -> bool:
    """True if every address ``host`` stands for is a loopback address (only this machine can connect)."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(
        ipaddress.ip_address(str(info[4][0]).split("%")[0]).is_loopback for info in infos
    )


def check_exposure(host: str, *, api_keys: str, allow_anonymous: bool) -> None:
    """Refuse to serve predictions to the network without API keys, unless asked to explicitly.

    Raises:
        ConfigError: ``host`` is reachable from other machines, no key is configured, and
            ``allow_anonymous`` is False.
    """
    if parse_api_keys(api_keys) or allow_anonymous or is_loopback(host):
        return
    raise ConfigError(
        f"refusing to serve on {host} without API keys: anyone who can reach it could read every "
        "prediction; set PREDCACHE_API_KEYS, bind 127.0.0.1, or pass --allow-anonymous"
    )


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    sys.exit(128 + signum)


def app_from_environment() -> Starlette:
    """uvicorn's factory in each worker process (``--workers`` > 1): settings come from the environment."""
    return create_app(Settings())


def serve(settings: Settings, *, host: str, port: int, workers: int, allow_anonymous: bool = False) -> None:
    """Serve the API until interrupted.

    Args:
        settings: database URL (or embedded home), API keys.
        host: interface to bind (127.0.0.1 by default in the CLI; 0.0.0.0 to expose it).
        port: TCP port.
        workers: uvicorn worker processes; each has its own pool of connections.
        allow_anonymous: serve a non-loopback ``host`` without API keys.

    Raises:
        ConfigError: a non-loopback ``host`` without API keys and without ``allow_anonymous``.
    """
    check_exposure(host, api_keys=settings.api_keys, allow_anonymous=allow_anonymous)
    import uvicorn

    # uvicorn re-raises SIGTERM after its graceful shutdown; with the default disposition the
    # process would die without running atexit hooks (the embedded server's handle release).
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _exit_on_sigterm)

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
    # The API never needs the owner's URL past this point: workers get only the reader's.
    settings = settings.model_copy(
        update={"api_database_url": prepare_database(settings), "database_url": None}
    )
    if workers == 1:
        uvicorn.run(create_app(settings), **options)  # type: ignore[arg-type]
        return
    # Workers are fresh processes that import the app by name: hand them the settings through
    # the environment.
    os.environ.update(settings_env(settings))
    uvicorn.run("pipelines.api.server:app_from_environment", factory=True, workers=workers, **options)  # type: ignore[arg-type]
