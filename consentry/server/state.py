"""The one state object a service's routes share (``app.state.consentry``), and
the dependency that hands it to them.

Invariants
- One registry, one gateway, one face engine and one :class:`~consentry.limits.Limits`
  per app: every route reads them from here (:data:`ServiceDep`), none from a closure
  or a global, so two apps in one process share nothing.
- Face analysis runs under ``faces_lock`` (the engines are not all thread-safe),
  taken only by a request that has images: a prompt-only check takes no lock of the
  service's (its write transaction takes the database's writer lock, as every
  decision must). The pipeline runs under ``pipeline_lock`` (one job at a time per
  process). ``serial=True`` is the old mode (every check under the face lock), kept
  as the benchmark's baseline.
- Job parameters are bounded by the one ``limits`` the CLI uses (same bounds, same
  wording) before anything runs: a job over a bound is a 422, never a partial run.
- A job that needs the model on a server without one is a 503 ``no_model``.
"""

from __future__ import annotations

import threading
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request

from consentry.faces.engine import FaceEngine
from consentry.gate import Gateway, Receipt, RunRequest, run_job
from consentry.generation.backends.base import Backend
from consentry.limits import Limits
from consentry.registry.checkpointer import Checkpointer
from consentry.registry.models import Grantee, Prior
from consentry.registry.store import Registry
from consentry.server.errors import ApiError
from consentry.server.telemetry import ServiceMetrics
from consentry.server.views import GranteeView, job_json

__all__ = ["ServiceDep", "ServiceState", "state_of"]


@dataclass
class ServiceState:
    """What the routes of one app share; built once by ``create_app``."""

    registry: Registry
    engine: FaceEngine
    gateway: Gateway
    limits: Limits
    admin_digest: str
    checkpointer: Checkpointer | None = None
    backend: Backend | None = None
    model_dir: Path | None = None
    serial: bool = False
    faces_lock: threading.Lock = field(default_factory=threading.Lock)
    pipeline_lock: threading.Lock = field(default_factory=threading.Lock)
    metrics: ServiceMetrics = field(default_factory=ServiceMetrics)  # this app's own
    _views: dict[str, tuple[int, GranteeView]] = field(default_factory=dict)

    def job_backend(self) -> Backend:
        if self.backend is None:
            raise ApiError(503, "no_model", "this server has no model: start it with --model DIR")
        return self.backend

    def bounded_job(
        self,
        images: int | None = None,
        steps: int | None = None,
        size: int | None = None,
        strength: float | None = None,
        prompt: str | None = None,
    ) -> None:
        """The one ``Limits``, with the CLI's wording; before anything runs, a
        :class:`~consentry.errors.JobLimitError` (422 ``bad_job`` or
        ``too_many_images``, by :mod:`consentry.server.errors`)."""
        self.limits.check_job(
            images=images, steps=steps, size=size, strength=strength, prompt=prompt
        )

    def needs_model(self, prior_id: str | None) -> bool:
        """Every job runs the model but a personal restoration with an exemplars prior."""
        if prior_id is None:
            return True
        with self.registry.db.read() as session:
            row = session.get(Prior, prior_id)
        return row is None or row.kind != "exemplars"  # an unknown prior is refused later

    def view_of(self, grantee_id: str) -> GranteeView:
        """The grantee's view, rebuilt only when a grant was added since: grants are
        append-only and a view holds grants in every state, so a view read after
        the log held ``n`` grants is still whole while it holds ``n``."""
        count = len(self.registry.consent.grants)
        cached = self._views.get(grantee_id)
        if cached is not None and cached[0] == count:
            return cached[1]
        view = GranteeView.of(self.registry, grantee_id)  # rows read after the count
        self._views[grantee_id] = (count, view)
        return view

    def for_grantee(self, grantee: Grantee, receipt: Receipt) -> Receipt:
        """What the grantee may read of a receipt (the log keeps every id)."""
        return self.view_of(grantee.id).receipt(self.registry, receipt)

    def run(self, grantee: Grantee, request: RunRequest) -> dict[str, Any]:
        """A job through the gateway, under the pipeline and face locks."""
        runner = self.job_backend() if self.needs_model(request.prior) else self.backend
        with self.pipeline_lock, self.faces_lock:
            receipt = run_job(self.gateway, request, runner)
        return job_json(self.for_grantee(grantee, receipt))

    def face_work(self, has_images: bool) -> AbstractContextManager[object]:
        """The face lock for a request with images (or every check when serial)."""
        return self.faces_lock if has_images or self.serial else nullcontext()


def state_of(request: Request) -> ServiceState:
    """The state of the app serving ``request``."""
    state: ServiceState = request.app.state.consentry
    return state


async def _state_dep(request: Request) -> ServiceState:
    # async: a plain attribute read, run on the event loop (no thread-pool hop)
    return state_of(request)


ServiceDep = Annotated[ServiceState, Depends(_state_dep)]
