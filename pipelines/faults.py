"""Fault injection points for the fault suite (tests/faults); inert unless PREDCACHE_FAULTS is set.

``PREDCACHE_FAULTS`` is read once per process (workers inherit it from the CLI):
``"point[@n]=action[,point[@n]=action...]"``. ``n`` (default 1) fires at the n-th time
any process reaches the point (counted with files in ``PREDCACHE_FAULTS_DIR``, so it is
global across the CLI and its worker processes). Actions:

- ``pause``: write ``<dir>/paused.<point>`` holding this process's pid, then wait until
  ``<dir>/release`` exists (the test kills the process meanwhile, or restarts PostgreSQL).
- ``kill``: SIGKILL this process (kill -9 from inside, at an exact point).
- ``raise``: raise ``EngineError`` (a task failure the engine may retry).

Points: ``plan.after``, ``score.after_claim``, ``score.after_engine``, ``verify.after``,
``publish.after`` (the CLI); ``shard.before_write``, ``shard.after_marker`` (in the shard's
transaction, done marker taken), ``shard.after_copy`` (rows copied, not committed),
``shard.after_commit`` (a worker).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from pipelines.errors import ConfigError, EngineError

ENV_FAULTS = "PREDCACHE_FAULTS"
ENV_DIR = "PREDCACHE_FAULTS_DIR"
POINTS = (
    "plan.after",
    "score.after_claim",
    "score.after_engine",
    "verify.after",
    "publish.after",
    "shard.before_write",
    "shard.after_marker",
    "shard.after_copy",
    "shard.after_commit",
)
ACTIONS = ("pause", "kill", "raise")
PAUSE_POLL_SECONDS = 0.05
PAUSE_LIMIT_SECONDS = 600


def parse(text: str) -> dict[str, tuple[int, str]]:
    """``"point@n=action,..."`` -> {point: (n, action)}.

    Raises:
        ConfigError: an unknown point or action, or a malformed entry.
    """
    plan: dict[str, tuple[int, str]] = {}
    for entry in filter(None, (part.strip() for part in text.split(","))):
        where, _, action = entry.partition("=")
        point, _, nth = where.partition("@")
        if point not in POINTS or action not in ACTIONS or (nth and not nth.isdigit()):
            raise ConfigError(
                f"{ENV_FAULTS} entry '{entry}' is not point[@n]=action with a point of "
                f"{', '.join(POINTS)} and an action of {', '.join(ACTIONS)}"
            )
        plan[point] = (int(nth or 1), action)
    return plan


_PLAN = parse(os.environ.get(ENV_FAULTS, ""))
_DIR = Path(os.environ[ENV_DIR]) if os.environ.get(ENV_DIR) else None
_hits: dict[str, int] = {}


def _hit_number(point: str) -> int:
    """How many times any process has reached ``point``, this time included."""
    if _DIR is None:
        _hits[point] = _hits.get(point, 0) + 1
        return _hits[point]
    n = 1
    while True:
        try:
            os.close(os.open(_DIR / f"hit.{point}.{n}", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            return n
        except FileExistsError:
            n += 1


def fault_point(point: str) -> None:
    """Fire the fault planned for ``point`` (if any and if this is its n-th hit); else nothing."""
    planned = _PLAN.get(point)
    if planned is None:
        return
    nth, action = planned
    if _hit_number(point) != nth:
        return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if action == "raise":
        raise EngineError(f"injected fault at {point}")
    if action == "pause" and _DIR is not None:
        (_DIR / f"paused.{point}.tmp").write_text(str(os.getpid()))
        os.replace(_DIR / f"paused.{point}.tmp", _DIR / f"paused.{point}")
        deadline = time.monotonic() + PAUSE_LIMIT_SECONDS
        while not (_DIR / "release").exists() and time.monotonic() < deadline:
            time.sleep(PAUSE_POLL_SECONDS)
