"""``GET /metrics`` (Prometheus text format, no key) and the health of the 1:N budget.

Gauges, read from the followed signed log (``registry.consent``, refreshed by a
tail read: no full read, nothing decrypted):

- ``consentry_registered_subjects``: subjects with an enrollment, not erased;
- ``consentry_gallery_subjects{engine}``: the same, per engine (the N searched);
- ``consentry_gallery_budget{engine}``: ``max_gallery`` of the newest signed
  calibration (absent for an engine without a 1:N operating point);
- ``consentry_gallery_over_budget{engine}``: 1 when N exceeds it, else 0;
- ``consentry_log_size``: log entries followed.

Then the metrics of :class:`consentry.server.telemetry.ServiceMetrics` (decisions by
outcome and purpose, latency per gate stage, checkpoint age, index size), from the
app's own Prometheus registry.

Invariant: the numbers are what the gate trusts (the signed log), so a database
row edited by hand changes none of them; :func:`budget_warnings` is what
``/healthz`` reports as ``degraded`` (the service still answers: 200).
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from consentry.identity.budget import GalleryBudget, gallery_budget, registered_subjects
from consentry.server.state import ServiceDep, ServiceState

__all__ = ["budget_warnings", "budgets", "router"]

router = APIRouter()

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def budgets(state: ServiceState) -> list[GalleryBudget]:
    """The budget of the service's engine and of every engine with a calibration."""
    consent = state.registry.consent
    consent.refresh()
    engines = sorted({state.engine.name} | set(consent.thresholds))
    return [gallery_budget(consent, engine) for engine in engines]


def budget_warnings(state: ServiceState) -> list[str]:
    return [line for b in budgets(state) if (line := b.warning()) is not None]


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


@router.get("/metrics", response_class=PlainTextResponse, tags=["health"])
def metrics(state: ServiceDep) -> PlainTextResponse:
    """Prometheus gauges of the registry's size and its 1:N budget (no key)."""
    found = budgets(state)
    consent = state.registry.consent
    lines = [
        "# HELP consentry_registered_subjects Subjects enrolled and not erased.",
        "# TYPE consentry_registered_subjects gauge",
        f"consentry_registered_subjects {registered_subjects(consent)}",
        "# HELP consentry_gallery_subjects Subjects enrolled with the engine, not erased (N).",
        "# TYPE consentry_gallery_subjects gauge",
        *(
            f'consentry_gallery_subjects{{engine="{_label(b.engine)}"}} {b.registered}'
            for b in found
        ),
        "# HELP consentry_gallery_budget Largest N within the FPIR budget of the calibration.",
        "# TYPE consentry_gallery_budget gauge",
        *(
            f'consentry_gallery_budget{{engine="{_label(b.engine)}"}} {b.max_gallery}'
            for b in found
            if b.max_gallery is not None
        ),
        "# HELP consentry_gallery_over_budget 1 when N exceeds the calibration's budget.",
        "# TYPE consentry_gallery_over_budget gauge",
        *(
            f'consentry_gallery_over_budget{{engine="{_label(b.engine)}"}} {int(b.over)}'
            for b in found
        ),
        "# HELP consentry_log_size Signed log entries followed.",
        "# TYPE consentry_log_size gauge",
        f"consentry_log_size {consent.size}",
    ]
    text = "\n".join(lines) + "\n" + state.metrics.text()  # decisions, stages, ages
    return PlainTextResponse(text, media_type=CONTENT_TYPE)
