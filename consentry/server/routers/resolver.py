"""Soft-binding resolution: our releases found again from a watermark or fingerprint.

Routes in the shape of the C2PA Soft Binding Resolution API, under ``/v1/sbr``,
public like ``/v1/verify`` (the log they read is public):

- ``GET /v1/sbr/services/supportedAlgorithms``: ``{"watermarks": [...],
  "fingerprints": [...]}`` (``alg`` names as our manifests write them).
- ``POST /v1/sbr/matches/byBinding``: JSON ``{"alg", "value"}`` (value in base64, as
  in the ``c2pa.soft-binding`` assertion) -> ``{"matches": [{"manifestId", ...}]}``.
- ``POST /v1/sbr/matches/byContent``: the image itself as the body (its own
  ``Content-Type``) -> the release it is recovered as (watermark, signed decision and
  fingerprint all agree), or no match: a look-alike is never a match here.
- ``GET /v1/sbr/manifests/{manifestId}``: the release's signed C2PA manifest store
  (``application/c2pa``, kept when it was signed: :mod:`consentry.provenance.manifest_store`;
  ``?output=N`` for a decision's later outputs); ``?format=entry`` returns the
  decision's signed log entry (statement, log index, leaf) instead. ``manifestId`` is
  the decision id. A release signed before stores were kept: 404, ``format=entry``
  still answers.

Invariant: every match names an *allowed* decision; byContent goes through
:func:`consentry.provenance.recover.recover_release` (signed log, not rows).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel

from consentry.errors import ImageTooLargeError, InputError
from consentry.faces.images import MAX_BYTES_DEFAULT, load_image_bytes
from consentry.provenance.fingerprint import ISCC_ALG, PDQ_ALG
from consentry.provenance.manifest_store import manifest_store_of
from consentry.provenance.recover import matches_by_binding, recover_release, signed_decision
from consentry.provenance.watermark import WATERMARK_ALG
from consentry.server.openapi_errors import errors
from consentry.server.state import ServiceDep

__all__ = ["router"]

router = APIRouter()


class Binding(BaseModel):
    alg: str
    value: str


@router.get("/v1/sbr/services/supportedAlgorithms", tags=["resolver"])
def supported_algorithms() -> dict[str, Any]:
    """The soft-binding algorithms this registry resolves."""
    return {
        "watermarks": [{"alg": WATERMARK_ALG}],
        "fingerprints": [{"alg": ISCC_ALG}, {"alg": PDQ_ALG}],
    }


@router.post("/v1/sbr/matches/byBinding", tags=["resolver"])
def by_binding(state: ServiceDep, binding: Binding) -> dict[str, Any]:
    """Releases a soft-binding value points to (exact for the watermark)."""
    try:
        value = base64.b64decode(binding.value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InputError("the binding value is not base64") from exc
    return {"matches": matches_by_binding(state.registry, binding.alg, value)}


@router.post("/v1/sbr/matches/byContent", tags=["resolver"], responses=errors(422))
async def by_content(request: Request, state: ServiceDep) -> dict[str, Any]:
    """The release an image is recovered as, if any (see the module docstring)."""
    data = await request.body()
    if len(data) > MAX_BYTES_DEFAULT:
        raise ImageTooLargeError(f"more than {MAX_BYTES_DEFAULT} bytes")
    pixels = load_image_bytes(data).pixels
    found, _why = recover_release(state.registry, pixels)
    if found is None:
        return {"matches": []}
    iscc, _pdq = found.distances
    score = round(100 * (1 - iscc / 64))
    return {"matches": [{"manifestId": str(found.statement["id"]), "similarityScore": score}]}


@router.get(
    "/v1/sbr/manifests/{manifest_id}",
    tags=["resolver"],
    responses={200: {"content": {"application/c2pa": {}, "application/json": {}}}, **errors(400)},
)
def manifest(state: ServiceDep, manifest_id: str, output: int = 0, format: str = "c2pa") -> Any:
    """The release's signed C2PA manifest store (``application/c2pa``), as kept when
    it was signed; ``format=entry``: the decision's signed log entry instead (JSON)."""
    statement, index = signed_decision(state.registry, manifest_id)
    if statement.get("allowed") is not True:
        raise InputError(f"decision {manifest_id} released nothing")
    if format == "entry":
        return {
            "manifestId": manifest_id,
            "log_index": index,
            "decision": statement,
            "leaf": state.registry.entry(index).leaf_json,
        }
    if format != "c2pa":
        raise InputError("format is c2pa (the manifest store) or entry (the signed log entry)")
    store = manifest_store_of(state.registry, manifest_id, output)
    return Response(content=store, media_type="application/c2pa")
