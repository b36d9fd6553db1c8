"""Consent signed on the subject's own device, over HTTP
(:mod:`consentry.registry.detached`).

- ``POST /v1/grants/prepare`` (admin): a grant for the subject to sign; nothing is
  recorded. ``POST /v1/statements`` (admin): submit a grant or a revocation the
  subject signed.
- ``POST /v1/me``: no key; a request signed by a subject's own key
  (:mod:`consentry.registry.subject_view`) answers with their grants and every
  decision that involved their likeness, each with an inclusion proof.
- ``POST /v1/revocations/prepare`` and ``POST /v1/revocations/signed``: no key. A
  subject withdraws consent alone: the request names the grant and the subject's
  own id (another subject's grant is answered as unknown, so a grant id alone
  reveals nothing), the statement names only the grant, and only
  a revocation bearing the subject's own valid signature is accepted, so nobody
  else can revoke in their name. The answer is the receipt: id and log index.

Invariants: every answer to a submit comes after the entry is logged and a
checkpoint covers it; a refusal writes nothing (see the detached module).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from consentry.registry.detached import (
    Presigned,
    describe,
    prepare_grant,
    prepare_revocation,
    receipt_of,
    sign_window,
    submit,
)
from consentry.registry.signing import Envelope
from consentry.registry.store import Registry, parse_until
from consentry.registry.subject_view import NonceCache, authenticate, subject_view
from consentry.server.auth import ADMIN
from consentry.server.errors import ApiError
from consentry.server.models import EnvelopeIn, PrepareGrantIn, PrepareRevocationIn
from consentry.server.openapi_errors import errors
from consentry.server.state import ServiceDep

__all__ = ["admin_router", "public_router"]

admin_router = APIRouter(tags=["consent"], dependencies=ADMIN)
public_router = APIRouter(tags=["consent"])
_NONCES = NonceCache()  # nonces are random: one cache for every app in the process


def _prepared(envelope: Envelope) -> dict[str, Any]:
    return {"envelope": envelope.to_json(), "plain_words": describe(envelope)}


def _submitted(registry: Registry, envelope: Envelope) -> Presigned:
    row = submit(registry, envelope)
    registry.checkpoint()
    return row


@admin_router.post("/v1/grants/prepare", responses=errors(403, 404, 409))
def prepare_grant_route(state: ServiceDep, body: PrepareGrantIn) -> dict[str, Any]:
    """A grant for the subject to sign on their own device; nothing is recorded."""
    envelope = prepare_grant(
        state.registry,
        body.subject,
        body.grantee,
        body.purposes,
        priors=body.priors,
        not_before=parse_until(body.not_before),
        not_after=parse_until(body.not_after),
        sign_within=sign_window(body.sign_within_days),
    )
    return _prepared(envelope)


@admin_router.post("/v1/statements", status_code=201, responses=errors(403, 404, 409))
def submit_statement(state: ServiceDep, body: EnvelopeIn) -> dict[str, Any]:
    """Submit a grant or revocation the subject signed; the receipt names its log index."""
    return receipt_of(_submitted(state.registry, Envelope.from_json(body.model_dump())))


@public_router.post("/v1/revocations/prepare", responses=errors(404, 409))
def prepare_revocation_route(state: ServiceDep, body: PrepareRevocationIn) -> dict[str, Any]:
    """A revocation of a grant for its subject to sign; nothing is recorded."""
    envelope = prepare_revocation(
        state.registry,
        body.grant,
        body.reason,
        sign_window(body.sign_within_days),
        subject_id=body.subject,
    )
    return _prepared(envelope)


@public_router.post("/v1/revocations/signed", status_code=201, responses=errors(403, 404, 409))
def submit_revocation(state: ServiceDep, body: EnvelopeIn) -> dict[str, Any]:
    """A revocation signed by the subject alone; effective at the next decision."""
    envelope = Envelope.from_json(body.model_dump())
    if envelope.statement.get("type") != "consentry.revocation":
        raise ApiError(403, "forbidden", "only revocations are accepted without the admin key")
    return receipt_of(_submitted(state.registry, envelope))


@public_router.post("/v1/me", responses=errors(403, 404))
def my_view(state: ServiceDep, body: EnvelopeIn, before: int | None = None) -> dict[str, Any]:
    """A subject's grants and every decision involving their likeness, newest first,
    with proofs; authenticated by a request signed with the subject's own key."""
    subject_id = authenticate(state.registry, Envelope.from_json(body.model_dump()), _NONCES)
    return subject_view(state.registry, subject_id, before)
