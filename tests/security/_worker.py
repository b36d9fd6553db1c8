"""Child processes for the concurrency and crash tests.

Children come from a ``forkserver``: a fresh interpreter that has imported this
module (and so Consentry, SQLAlchemy and the drivers) once and never opened a
database; each child is forked from it, not from pytest, so it shares no
connection, engine or lock with the parent or its siblings, and starts in
milliseconds instead of re-importing everything (that kept the suite in budget
on two cores).
"""

from __future__ import annotations

import multiprocessing
import time
from multiprocessing.context import ForkServerProcess
from multiprocessing.synchronize import Barrier, Event
from typing import Any

from consentry.registry.store import Registry

_CTX = multiprocessing.get_context("forkserver")
_CTX.set_forkserver_preload([__name__])


def start(target: Any, *args: Any) -> ForkServerProcess:
    process = _CTX.Process(target=target, args=args, daemon=True)
    process.start()
    return process


def barrier(parties: int) -> Barrier:
    return _CTX.Barrier(parties)


def event() -> Event:
    return _CTX.Event()


def churn(
    home: str, url: str, subject: str, grantee: str, rounds: int, go: Barrier, me: int
) -> None:
    """Open the registry, wait for every sibling, then grant and revoke ``rounds`` times
    (each revocation's reason names the writer: ``churn <me> <n>``)."""
    with Registry.open(home, url) as registry:
        registry.get_subject(subject)  # connected before the start line
        go.wait(timeout=60)
        for n in range(rounds):
            grant = registry.grant(subject, grantee, ["generate"])
            registry.revoke(grant.id, f"churn {me} {n}")
            # SQLite's busy handler is not fair: a writer that just committed can take
            # the lock again at once. A short pause lets the siblings in, so the test
            # really exercises interleaved writers.
            time.sleep(0.002)


def crash(home: str, url: str, subject: str, grantee: str, ready: Event) -> None:
    """Write forever (grants, every other one revoked, a checkpoint now and then)
    until the parent SIGKILLs this process; ``ready`` is set after the first commit."""
    registry = Registry.open(home, url)
    n = 0
    while True:
        grant = registry.grant(subject, grantee, ["restore"])
        if n % 2:
            registry.revoke(grant.id, f"crash {n}")
        if n % 5 == 4:
            registry.checkpoint()
        if n == 0:
            ready.set()
        n += 1
