"""The app factory: one FastAPI service for one open registry and one face engine.

Routes (all JSON unless noted; errors are ``{"error": {"code", "message"}}``,
:mod:`consentry.server.errors`): the gateway (:mod:`.routers.gateway`, grantee
key), the admin actions (:mod:`.routers.admin`, :mod:`.routers.directory`: subjects,
grantees, key rotation; admin key), the public log,
verification and audit (:mod:`.routers.public`), the log as tlog-tiles
(:mod:`.routers.tiles`) and Prometheus metrics (:mod:`.routers.metrics`, fed by the
gateway's watchers, :mod:`consentry.server.telemetry`). OpenAPI lists every error
status in the one body (:mod:`consentry.server.openapi_errors`). Every
request first passes the guard (:mod:`consentry.server.guard`: body size, strict
forms, last-resort 500).

Invariants
- Fail closed: a bad admin key hash or model folder fails at start; a request the
  service cannot judge is an error answer, never an allow.
- Handlers are sync ``def`` (run in the threadpool, so checks run concurrently)
  sharing one :class:`~consentry.server.state.ServiceState` (``app.state.consentry``):
  one registry, one gateway, one ``Limits``, the locks.
- Checkpoints: with a ``checkpointer`` (what ``consentry serve`` gives) they are
  signed on its cadence, started and stopped (a last one signed) with the app's
  lifespan; a released output waits for one covering its decision;
  ``GET /v1/log/proof/{index}`` waits (bounded) for one covering ``index``.
  Without one, every decision signs a checkpoint (per-decision mode).
- The app follows the log while it runs: the identity index (and through it the
  consent state) is refreshed every ``follow_interval`` seconds (default
  ``DEFAULT_FOLLOW_INTERVAL`` = 0.2 s; ``serve --follow-interval``) in a
  background thread. How stale a check's view can be: each job refreshes the
  consent state once at its start (``Gateway._pre``), so its pre-check judges the
  log as it stood when the job started, never older; the follow interval only
  bounds how long a tail that refresh reads, and how old the state is that API-key
  authentication reads without a refresh (a hit: a signed grantee's key hash never
  changes; a miss, e.g. a grantee added since, follows the log first). An allow is
  re-checked inside its write transaction against the log's tail then
  (``record_decision``): a revocation, erasure or opt-out committed by any process
  after the pre-check's refresh still wins. A subject registered after that refresh
  is not a fact of the job (consent at the time of the check).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import replace
from pathlib import Path

from fastapi import Depends, FastAPI

from consentry.errors import InputError
from consentry.faces.engine import FaceEngine
from consentry.gate import Gateway
from consentry.generation.backends.base import Backend
from consentry.limits import Limits
from consentry.registry.checkpointer import Checkpointer
from consentry.registry.store import Registry
from consentry.server.errors import register_error_handlers
from consentry.server.guard import MAX_BODY_BYTES, GuardMiddleware, strict_form
from consentry.server.logs import redact_access_log
from consentry.server.openapi_errors import document_errors
from consentry.server.routers import (
    admin,
    consent,
    directory,
    gateway,
    metrics,
    public,
    resolver,
    review,
    tiles,
)
from consentry.server.state import ServiceState
from consentry.server.telemetry import DecisionLog

__all__ = ["DEFAULT_FOLLOW_INTERVAL", "MAX_IMAGES", "create_app"]

DEFAULT_FOLLOW_INTERVAL = 0.2  # seconds between background follows of the log
MAX_IMAGES = Limits().max_images


def _lifespan(
    state: ServiceState, follow_interval: float | None, owns_registry: bool
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """Start the checkpointer and the log follower with the app; stop them (a
    last checkpoint signed: nothing logged is left uncovered) when it ends."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if state.checkpointer is not None:
            state.checkpointer.start()
        if follow_interval is not None:
            state.gateway.index.follow(follow_interval)
        try:
            yield
        finally:
            state.gateway.index.stop()
            if state.checkpointer is not None:
                state.checkpointer.stop()
            if owns_registry:
                state.registry.close()

    return lifespan


def create_app(
    registry: Registry,
    engine: FaceEngine,
    admin_key_sha256: str,
    *,
    refuse_unknown_faces: bool = False,
    max_body_bytes: int = MAX_BODY_BYTES,
    max_images: int | None = None,
    model_dir: Path | None = None,
    backend: Backend | None = None,
    limits: Limits | None = None,
    checkpointer: Checkpointer | None = None,
    wait_for_proof: bool = False,
    serial: bool = False,
    follow_interval: float | None = DEFAULT_FOLLOW_INTERVAL,
    owns_registry: bool = False,
) -> FastAPI:
    """The service for one open registry and one face engine.

    ``model_dir`` is the local diffusers folder that ``/v1/generate`` and
    ``/v1/restore`` run (loaded here, so a bad folder fails at start); ``backend``
    replaces the diffusers backend built from it (the same protocol). ``limits``
    (default ``Limits()``, the CLI's) bounds every job; ``max_images``, when given,
    overrides its image count only. ``checkpointer``: checkpoints on its cadence
    (started with the app), else one per decision; ``wait_for_proof``: a check
    waits for its proof and returns it; ``serial``: every check under one lock
    (the old mode); ``follow_interval``: seconds between background refreshes of
    the identity index and consent state (None: only per decision);
    ``owns_registry``: close the registry when the app shuts down.
    """
    admin_digest = admin_key_sha256.strip().lower()
    if len(admin_digest) != 64:
        raise InputError("the admin key hash must be a SHA-256 in hex")
    bounds = limits or Limits()
    if max_images is not None:
        bounds = replace(bounds, max_images=max_images)
    checks = Gateway(
        registry,
        engine,
        refuse_unknown_faces=refuse_unknown_faces,
        limits=bounds,
        checkpointer=checkpointer,
        wait_for_proof=wait_for_proof,
    )
    if backend is None and model_dir is not None:
        from consentry.generation.backends.diffusers_backend import DiffusersBackend

        backend = DiffusersBackend(model_dir)  # loaded now: a bad folder fails at start
    state = ServiceState(
        registry=registry,
        engine=engine,
        gateway=checks,
        limits=bounds,
        admin_digest=admin_digest,
        checkpointer=checkpointer,
        backend=backend,
        model_dir=model_dir,
        serial=serial,
    )
    app = FastAPI(
        title="Consentry",
        version="1",
        description="Consent-aware likeness registry: gateway checks, grants, the signed log.",
        dependencies=[Depends(strict_form)],
        lifespan=_lifespan(state, follow_interval, owns_registry),
    )
    app.state.consentry = state
    redact_access_log()  # a key put in a URL by mistake is not logged
    state.metrics.attach(state)
    checks.telemetry.watch(state.metrics)
    checks.telemetry.watch(DecisionLog())
    register_error_handlers(app)
    for group in (gateway, admin, directory, review, public, tiles, metrics, resolver):
        app.include_router(group.router)
    app.include_router(consent.admin_router)
    app.include_router(consent.public_router)
    document_errors(app)  # every status, in the one error body
    # the guard wraps the whole app, routers included
    app.add_middleware(GuardMiddleware, max_body_bytes=max_body_bytes)
    return app
