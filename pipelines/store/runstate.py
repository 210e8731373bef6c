"""The run state machine: the one table of allowed moves, enforced in SQL, and the scoring lease.

States: planned -> scoring -> verified -> published, and failed, rolled_back, abandoned.
Every move is one ``UPDATE ... WHERE status = ANY(<allowed previous states>)`` whose row
count is checked, so two processes racing on a run cannot both move it: the loser gets a
``RunStateError`` that names the state the run is really in. Every move is logged in
``run_events`` (the ledger says what happened, faults included).

A scoring run has an owner (``host:pid:nonce``) and a lease the owner's heartbeat extends.
While the lease holds, no other process may score, verify or fail the run; once it has
expired (or its owner is a dead process on this host) any process may take the run over.
"""

from __future__ import annotations

import os
import socket
import uuid
from typing import Any

import psycopg

from pipelines.errors import RunStateError

#: to-state -> the states a run may be in to move there. The only place moves are defined.
EDGES: dict[str, tuple[str, ...]] = {
    # scoring -> scoring: a resume by the lease owner, or a takeover once the lease is free.
    "scoring": ("planned", "failed", "scoring"),
    "verified": ("scoring",),
    "failed": ("planned", "scoring"),
    "published": ("verified", "rolled_back"),
    "rolled_back": ("published",),
    "abandoned": ("planned", "scoring", "failed"),
}
STATES = ("planned", "scoring", "verified", "published", "failed", "rolled_back", "abandoned")
#: States whose runs hold a lease that other processes must respect.
LEASED = ("scoring",)
DEFAULT_LEASE_SECONDS = 60

#: SQL condition: the lease of the row is free for ``%(owner)s`` (its own, unset, expired, or
#: held by ``%(dead_owner)s``, a process found dead on this host).
_LEASE_FREE = (
    "(status <> ALL(%(leased)s) OR owner IS NULL OR owner = %(owner)s OR owner = %(dead_owner)s "
    "OR lease_expires_at IS NULL OR lease_expires_at < now())"
)


def owner_id() -> str:
    """A new owner identity for this process: ``host:pid:nonce``."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def owner_is_dead(owner: str | None) -> bool:
    """True if ``owner`` names a process on this host that no longer exists."""
    if not owner:
        return False
    parts = owner.split(":")
    if len(parts) != 3 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return False
    try:
        os.kill(int(parts[1]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError):
        return False
    return False


def move(
    conn: psycopg.Connection[Any],
    run_id: int,
    to: str,
    *,
    owner: str | None = None,
    detail: str = "",
    set_sql: str = "",
    params: dict[str, Any] | None = None,
) -> str:
    """Move run ``run_id`` to state ``to`` if the edge is allowed and the lease is free for ``owner``.

    Args:
        conn: a connection (autocommit or in a transaction; this opens a nested one).
        run_id: the run.
        to: the new state (a key of ``EDGES``).
        owner: the process making the move (lease holder or taker); None for moves outside
            scoring (publish, rollback), which the lease does not guard.
        detail: why, recorded in ``run_events``.
        set_sql: extra ``col = expr`` assignments for the same UPDATE (trusted SQL text).
        params: named parameters ``set_sql`` uses.

    Returns:
        The state the run was in.

    Raises:
        RunStateError: the run does not exist, is in a state with no edge to ``to``, or
            another live process holds its lease.
    """
    if to not in STATES:
        raise RunStateError(f"'{to}' is not a run state; states: {', '.join(STATES)}")
    allowed = EDGES.get(to, ())
    with conn.transaction():
        row = conn.execute(
            "SELECT status, owner FROM runs WHERE run_id = %s FOR UPDATE", (run_id,)
        ).fetchone()
        if row is None:
            raise RunStateError(f"no run {run_id}; see `predcache runs list`")
        before, holder = str(row[0]), row[1]
        values: dict[str, Any] = {
            **(params or {}),
            "run_id": run_id,
            "to": to,
            "allowed": list(allowed),
            "owner": owner,
            "dead_owner": holder if owner is not None and owner_is_dead(holder) else None,
            "leased": list(LEASED),
        }
        lease_guard = f" AND {_LEASE_FREE}" if owner is not None else ""
        updated = conn.execute(
            f"UPDATE runs SET status = %(to)s{', ' + set_sql if set_sql else ''} "  # set_sql is trusted code
            f"WHERE run_id = %(run_id)s AND status = ANY(%(allowed)s){lease_guard}",
            values,
        )
        if updated.rowcount != 1:
            if before not in allowed:
                raise RunStateError(
                    f"run {run_id} is {before}; it cannot become {to} "
                    f"(allowed from: {', '.join(allowed) or 'no state'})"
                )
            lease = conn.execute(
                "SELECT to_char(lease_expires_at, 'YYYY-MM-DD HH24:MI:SS TZ') FROM runs WHERE run_id = %s",
                (run_id,),
            ).fetchone()
            raise RunStateError(
                f"run {run_id} is being scored by {holder} (lease until {lease[0] if lease else '?'}); "
                "wait for it to finish, or rerun once that process is gone and its lease has expired"
            )
        if to == before == "scoring" and holder not in (None, owner):
            detail = f"took over from {holder}; {detail}" if detail else f"took over from {holder}"
        conn.execute(
            "INSERT INTO run_events (run_id, from_status, to_status, owner, detail) "
            "VALUES (%s, %s, %s, %s, %s)",
            (run_id, before, to, owner, detail[:2000]),
        )
    return before


def heartbeat(conn: psycopg.Connection[Any], run_id: int, owner: str, lease_seconds: float) -> bool:
    """Extend ``owner``'s lease on a scoring run; False if it no longer holds it."""
    cur = conn.execute(
        "UPDATE runs SET lease_expires_at = now() + make_interval(secs => %s), heartbeat_at = now() "
        "WHERE run_id = %s AND owner = %s AND status = 'scoring'",
        (lease_seconds, run_id, owner),
    )
    return cur.rowcount == 1


def release(conn: psycopg.Connection[Any], run_id: int, owner: str) -> None:
    """End ``owner``'s lease (scoring finished or stopped): the next step needs no wait."""
    conn.execute("UPDATE runs SET lease_expires_at = NULL WHERE run_id = %s AND owner = %s", (run_id, owner))


def events(conn: psycopg.Connection[Any], run_id: int) -> list[str]:
    """The run's moves, oldest first, as ``"from -> to by owner: detail"``."""
    rows = conn.execute(
        "SELECT from_status, to_status, owner, detail FROM run_events WHERE run_id = %s ORDER BY event_id",
        (run_id,),
    ).fetchall()
    return [f"{a} -> {b}" + (f" by {o}" if o else "") + (f": {d}" if d else "") for a, b, o, d in rows]
