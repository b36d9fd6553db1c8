"""The gateway routes: every job a grantee asks for is decided, logged and, when
allowed, run and signed. All need a grantee key (the admin key does not open them).

- ``POST /v1/check``: multipart, files ``images`` (0..``Limits.max_images``),
  fields ``purpose``, ``prompt``, ``prior``. The requester is always the grantee
  who holds the key: no field names a requester.
- ``POST /v1/generate`` and ``POST /v1/restore``: run a job through the gateway
  (pre-check, pipeline, post-check, release-time revocation check, signing).
  Released outputs come back as base64 signed PNGs. Without a model folder these
  answer 503 (but a personal restoration with an exemplars prior).

Invariants: a refusal is HTTP 200 with ``allowed: false`` and its (redacted)
reasons, and no outputs; a hold (issue 14) is HTTP **202 Accepted** with
``allowed: false``, ``held: true`` and the held ``decision`` id, queued for a
person (:mod:`.review`); the same job resubmitted with the form field ``review``
(that id) after an approval is decided again, the held candidate dropped; job
parameters are checked against the one ``Limits`` before anything runs (422);
every decision is logged, refusals too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse

from consentry.errors import InputError
from consentry.gate import CheckRequest, RunRequest
from consentry.registry.statements import PURPOSES
from consentry.server.auth import AuthGrantee
from consentry.server.guard import parsed_all
from consentry.server.openapi_errors import HELD, errors
from consentry.server.state import ServiceDep

__all__ = ["router"]

router = APIRouter(tags=["gateway"])

ReviewField = Annotated[
    str | None, Form(description="Resubmit a held job under this held decision's approval.")
]


def _status(body: dict[str, Any]) -> int:
    """202 Accepted for a held job (queued for review), else 200."""
    return 202 if body.get("held") else 200


@router.post("/v1/check", responses={**HELD, **errors(503)})
def check(
    http: Request,
    state: ServiceDep,
    grantee: AuthGrantee,
    purpose: Annotated[str, Form(description=f"One of: {', '.join(PURPOSES)}.")],
    images: Annotated[list[UploadFile] | None, File(description="Input images.")] = None,
    prompt: Annotated[str, Form()] = "",
    prior: Annotated[str | None, Form(description="Registered prior id.")] = None,
    review: ReviewField = None,
) -> JSONResponse:
    """Decide a job for the calling grantee; every decision is logged.

    A refusal is a 200 with ``allowed: false`` and its reasons.
    """
    files = list(images or [])
    parsed_all(http, "images", len(files))
    state.bounded_job(images=len(files), prompt=prompt)
    if purpose not in PURPOSES:
        raise InputError(f"unknown purpose {purpose!r}: choose from {', '.join(PURPOSES)}")
    datas = [f.file.read() for f in files]
    request = CheckRequest(grantee.id, purpose, datas, prompt, prior or None, review=review or None)
    with state.face_work(bool(datas)):
        receipt = state.gateway.check(request)
    # the receipt's JSON is plain JSON values: rendered as is, no response model
    body = state.for_grantee(grantee, receipt).to_json()
    return JSONResponse(body, status_code=_status(body))


@router.post("/v1/generate", responses={**HELD, **errors(503)})
def generate(
    state: ServiceDep,
    grantee: AuthGrantee,
    prompt: Annotated[str, Form(description="What to generate.")],
    prior: Annotated[str | None, Form(description="Registered prior id.")] = None,
    steps: Annotated[int, Form()] = 20,
    size: Annotated[int, Form()] = 512,
    seed: Annotated[int, Form()] = 0,
    review: ReviewField = None,
) -> JSONResponse:
    """Generate for the calling grantee: checked, run, post-checked, logged, signed.

    A refusal is a 200 with ``allowed: false`` and no outputs.
    """
    state.bounded_job(steps=steps, size=size, prompt=prompt)
    job = RunRequest(
        grantee.id, "generate", prompt, state.model_dir or Path(), None, prior or None,
        steps, size, seed, review=review or None,
    )  # fmt: skip
    body = state.run(grantee, job)
    return JSONResponse(body, status_code=_status(body))


@router.post("/v1/restore", responses={**HELD, **errors(503)})
def restore(
    http: Request,
    state: ServiceDep,
    grantee: AuthGrantee,
    image: Annotated[UploadFile, File(description="The image to restore.")],
    prompt: Annotated[str, Form()] = "a sharp photo",
    prior: Annotated[str | None, Form(description="Registered prior id.")] = None,
    steps: Annotated[int, Form()] = 20,
    size: Annotated[int, Form()] = 512,
    seed: Annotated[int, Form()] = 0,
    strength: Annotated[float, Form()] = 0.6,
    review: ReviewField = None,
) -> JSONResponse:
    """Restore an image for the calling grantee (img2img through the gateway)."""
    parsed_all(http, "image", 1)
    state.bounded_job(images=1, steps=steps, size=size, strength=strength, prompt=prompt)
    data = image.file.read()
    job = RunRequest(
        grantee.id, "restore", prompt, state.model_dir or Path(), data, prior or None,
        steps, size, seed, strength, review=review or None,
    )  # fmt: skip
    body = state.run(grantee, job)
    return JSONResponse(body, status_code=_status(body))
