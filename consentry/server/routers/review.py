"""The review routes (issue 14): the queue of held jobs for a review tool. Every
route needs the admin key (a grantee key is a 401); a verdict is logged, signed by
the operator key, and checkpointed before it is answered.

- ``GET /v1/reviews``: the held decisions no review has judged yet, oldest first.
- ``GET /v1/reviews/{id}``: one held decision and its review (``null`` while pending).
- ``POST /v1/reviews/{id}/approve`` and ``/reject``: JSON ``{"reviewer", "note"}``;
  201 with the review. A second verdict on one hold is a 409 ``review``; no such
  hold a 404.

A held job itself comes back from ``/v1/check``, ``/v1/generate`` and
``/v1/restore`` as **202 Accepted** with ``held: true`` and its ``decision`` id:
the job is neither allowed nor refused yet. Once approved, the grantee resubmits
the same job with the form field ``review`` set to that decision id.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from consentry.registry.reviews import get_hold, hold_json, pending_holds, record_review
from consentry.server.auth import ADMIN
from consentry.server.openapi_errors import errors
from consentry.server.state import ServiceDep, ServiceState

__all__ = ["ReviewIn", "router"]

router = APIRouter(tags=["review"], dependencies=ADMIN)


class ReviewIn(BaseModel):
    reviewer: str = Field(description="Who reviews (kept in the signed review).")
    note: str = Field(default="", description="Why.")


@router.get("/v1/reviews")
def list_reviews(state: ServiceDep) -> dict[str, Any]:
    """The held jobs waiting for a person's verdict."""
    return {"holds": [hold_json(h) for h in pending_holds(state.registry)]}


@router.get("/v1/reviews/{decision}")
def show_review(state: ServiceDep, decision: str) -> dict[str, Any]:
    """One held job and its review, if any."""
    hold, review = get_hold(state.registry, decision)
    return hold_json(hold, review)


def _verdict(state: ServiceState, decision: str, verdict: str, body: ReviewIn) -> dict[str, Any]:
    record_review(state.registry, decision, verdict, body.reviewer, body.note)
    state.registry.checkpoint()
    hold, review = get_hold(state.registry, decision)
    return hold_json(hold, review)


@router.post("/v1/reviews/{decision}/approve", status_code=201, responses=errors(409))
def approve(state: ServiceDep, decision: str, body: ReviewIn) -> dict[str, Any]:
    """The held face is not the candidate subject: the job may be resubmitted."""
    return _verdict(state, decision, "approve", body)


@router.post("/v1/reviews/{decision}/reject", status_code=201, responses=errors(409))
def reject(state: ServiceDep, decision: str, body: ReviewIn) -> dict[str, Any]:
    """The held face is the candidate subject, or cannot be told: it stays refused."""
    return _verdict(state, decision, "reject", body)
