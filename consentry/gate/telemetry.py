"""What the gate tells whoever watches it: how long each stage took, and every
decision it logged. The gate depends on nothing here but the standard library;
the service attaches its watchers (Prometheus, the JSON decision log,
:mod:`consentry.server.telemetry`), a library caller none.

Stages (:data:`STAGES`): ``pre_check`` (facts and the verdict before anything runs),
``backend`` (the model run), ``post_check`` (outputs marked, matched, re-decided),
``log_append`` (the decision written, and its checkpoint in per-decision mode),
``sign`` (the released outputs' C2PA manifests).

Invariants
- A watcher never changes a decision: its exceptions are logged and dropped, and
  it is told only after the fact (the stage ran, the decision is logged).
- A :class:`DecisionEvent` holds ids, counts and times only: never a face, an
  image, an embedding, a prompt or a key.
- With no watcher, a stage costs two clock reads.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal, Protocol

__all__ = ["STAGES", "DecisionEvent", "Outcome", "Telemetry", "Watcher"]

STAGES = ("pre_check", "backend", "post_check", "log_append", "sign")
Outcome = Literal["allowed", "refused", "held"]

_log = logging.getLogger("consentry.telemetry")


@dataclass(frozen=True)
class DecisionEvent:
    """One logged decision, as a watcher sees it (ids only)."""

    decision_id: str
    log_index: int
    outcome: Outcome
    purpose: str
    grantee_id: str
    subjects: tuple[str, ...]
    grants: tuple[str, ...]
    duration_s: float  # from the job's start to its decision logged


class Watcher(Protocol):
    def stage(self, name: str, seconds: float) -> None: ...

    def decision(self, event: DecisionEvent) -> None: ...


class Telemetry:
    """The watchers of one gateway (thread-safe: watchers are added at start)."""

    def __init__(self) -> None:
        self._watchers: list[Watcher] = []
        self._lock = threading.Lock()

    def watch(self, watcher: Watcher) -> None:
        with self._lock:
            self._watchers = [*self._watchers, watcher]

    @contextmanager
    def timed(self, name: str) -> Iterator[None]:
        """Time the block as stage ``name`` (told even when the block raises)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            seconds = time.perf_counter() - start
            for watcher in self._watchers:
                try:
                    watcher.stage(name, seconds)
                except Exception:  # a watcher never changes a decision
                    _log.exception("telemetry watcher failed on stage %s", name)

    def decided(self, event: DecisionEvent) -> None:
        for watcher in self._watchers:
            try:
                watcher.decision(event)
            except Exception:
                _log.exception("telemetry watcher failed on decision %s", event.decision_id)
