"""The service's watchers of its gateway (:mod:`consentry.gate.telemetry`):
Prometheus metrics in a registry of the app's own, and one JSON line per decision
on the ``consentry.decisions`` logger.

Metrics (``GET /metrics`` appends them to the budget gauges of :mod:`.routers.metrics`):

- ``consentry_decisions_total{outcome,purpose}``: decisions logged, ``outcome``
  ``allowed``, ``refused`` or ``held`` (counter);
- ``consentry_stage_seconds{stage}``: time per gate stage, ``pre_check``,
  ``backend``, ``post_check``, ``log_append``, ``sign`` (histogram);
- ``consentry_decision_seconds``: from a job's start to its decision logged (histogram);
- ``consentry_checkpoint_age_seconds``: since the newest signed checkpoint was cut
  (absent before the first);
- ``consentry_index_size{engine}``: face vectors in the service's identity index.

The decision log line (INFO, ``consentry.decisions``): ``{"event": "decision", "id",
"log_index", "outcome", "purpose", "grantee", "subjects", "grants", "duration_ms"}``.

Invariants
- Each app has its own :class:`~prometheus_client.CollectorRegistry`: two apps in one
  process count apart (the global default registry is never used).
- Only ids, counts and times leave here: never a face, an image, a prompt or a key.
- The checkpoint age and index size are read at scrape time from the registry the
  gate trusts, not kept up to date by hand.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, get_args

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from consentry.errors import ConsentryError
from consentry.gate.telemetry import DecisionEvent, Outcome
from consentry.registry import checkpoint as cp
from consentry.registry.statements import PURPOSES

if TYPE_CHECKING:
    from consentry.server.state import ServiceState

__all__ = ["DECISION_LOGGER", "DecisionLog", "ServiceMetrics"]

DECISION_LOGGER = "consentry.decisions"
_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class DecisionLog:
    """One JSON line per decision on :data:`DECISION_LOGGER` (INFO)."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger or logging.getLogger(DECISION_LOGGER)

    def stage(self, name: str, seconds: float) -> None:
        return None

    def decision(self, event: DecisionEvent) -> None:
        if not self.logger.isEnabledFor(logging.INFO):
            return
        line = {
            "event": "decision",
            "id": event.decision_id,
            "log_index": event.log_index,
            "outcome": event.outcome,
            "purpose": event.purpose,
            "grantee": event.grantee_id,
            "subjects": list(event.subjects),
            "grants": list(event.grants),
            "duration_ms": round(event.duration_s * 1000, 3),
        }
        self.logger.info(json.dumps(line, sort_keys=True))


class _ScrapeGauges(Collector):
    """Gauges read from the service's state at each scrape."""

    def __init__(self, state: ServiceState) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        registry = self.state.registry
        try:
            cut = cp.parse_checkpoint(registry.latest_checkpoint())[0].timestamp
        except ConsentryError:
            cut = None  # no checkpoint yet: the gauge is absent
        if cut is not None:
            age = GaugeMetricFamily(
                "consentry_checkpoint_age_seconds",
                "Seconds since the newest signed checkpoint was cut.",
            )
            age.add_metric([], max(0.0, (registry.now() - cut).total_seconds()))
            yield age
        size = GaugeMetricFamily(
            "consentry_index_size", "Face vectors in the identity index.", labels=["engine"]
        )
        size.add_metric([self.state.engine.name], float(len(self.state.gateway.index)))
        yield size


class ServiceMetrics:
    """The Prometheus metrics of one app (a gate watcher)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.decisions = Counter(
            "consentry_decisions",
            "Decisions logged, by outcome and purpose.",
            ["outcome", "purpose"],
            registry=self.registry,
        )
        for outcome in get_args(Outcome):
            for purpose in PURPOSES:
                self.decisions.labels(outcome=outcome, purpose=purpose)  # 0 until counted
        self.stages = Histogram(
            "consentry_stage_seconds",
            "Time spent per gate stage.",
            ["stage"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.durations = Histogram(
            "consentry_decision_seconds",
            "From a job's start to its decision logged.",
            buckets=_BUCKETS,
            registry=self.registry,
        )

    def attach(self, state: ServiceState) -> None:
        """Read the scrape-time gauges from ``state``."""
        self.registry.register(_ScrapeGauges(state))

    def stage(self, name: str, seconds: float) -> None:
        self.stages.labels(stage=name).observe(seconds)

    def decision(self, event: DecisionEvent) -> None:
        self.decisions.labels(outcome=event.outcome, purpose=event.purpose).inc()
        self.durations.observe(event.duration_s)

    def text(self) -> str:
        """The metrics in the Prometheus text format."""
        return generate_latest(self.registry).decode()
