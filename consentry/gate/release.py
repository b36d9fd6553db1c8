"""Release: run the job's model, post-check what it made, sign what is released.

Invariants
- The outputs are post-checked like inputs: every face in them is matched (the
  gateway's face facts, the same face cap), the consent state is refreshed and
  the grants re-read (a revocation since the pre-check wins), and an output too
  close to one of the prior's photos (memorization, ``Limits.max_copy_ssim``) is
  withheld; :func:`consentry.gate.policy.decide` judges the post-check facts.
- Every output is marked (:mod:`consentry.provenance.marks`) as soon as it is made:
  the watermarked pixels are what is post-checked, hashed into the decision,
  fingerprinted (the marks are logged with the decision) and signed.
- Nothing unsigned is released: outputs are signed (C2PA, with the decision, its
  grants, the prior and the memorization scores) only after the allow is logged
  and a checkpoint covers it (:meth:`consentry.gate.Gateway.covering`), so the
  manifest carries the proof and verifies offline.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from PIL import Image
from sqlmodel import select

from consentry.errors import InputError, NotFoundError
from consentry.faces.images import LoadedImage, load_image
from consentry.gate.memorization import (
    MemorizationScore,
    Reference,
    as_reference,
    memorization_score,
    prior_references,
)
from consentry.gate.policy import PriorFact, Verdict, decide
from consentry.gate.requests import Job, RunRequest
from consentry.generation.backends.base import Backend, PriorRef
from consentry.provenance.marks import mark_outputs
from consentry.registry.biometrics import opted_out_subjects
from consentry.registry.models import Decision, Grant, Prior
from consentry.registry.prior_files import prior_store_path
from consentry.registry.statements import format_time
from consentry.registry.store import Registry

if TYPE_CHECKING:
    from consentry.gate.gateway import Gateway

__all__ = ["memorization_details", "post_check", "produce", "sign_outputs"]


def png(image: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def post_check(gateway: Gateway, request: RunRequest, job: Job, backend: Backend | None) -> Verdict:
    """Run the model and decide on its outputs (see the invariants). The outputs and
    memorization scores are kept on ``job`` as they are made, so a refusal raised
    midway still logs the hashes of what was made."""
    assert job.facts is not None
    with gateway.telemetry.timed("backend"):
        produced, references = produce(gateway, request, job, backend)
    with gateway.telemetry.timed("post_check"):
        return _post_check(gateway, job, produced, references)


def _post_check(gateway: Gateway, job: Job, produced: list[Any], references: Any) -> Verdict:
    """Mark the outputs, match their faces, re-read consent and decide again."""
    assert job.facts is not None
    job.release_id, produced, job.marks = mark_outputs(produced)  # what is checked is marked
    job.outputs = [png(image) for image in produced]
    loaded = [load_image(data) for data in job.outputs]
    output_faces, _ = gateway._faces(loaded)
    job.memos = memorization(gateway, job.facts.prior, loaded, references)
    copies = [m.ssim for m in job.memos if m is not None]
    involved = set(job.facts.known_subjects) | {f.subject_id for f in output_faces if f.subject_id}
    gateway.registry.consent.refresh()  # the post-check's facts: the log as it is now
    post = replace(
        job.facts,
        stage="post",
        now=format_time(gateway.registry.now()),
        output_faces=tuple(output_faces),
        grants=tuple(gateway._grants(involved, job.facts.prior)),  # revocations re-read
        known_subjects=frozenset(involved),
        opted_out=opted_out_subjects(gateway.registry, involved),
        copy_ssim=max(copies) if copies else None,
    )
    return decide(post)


def memorization_details(job: Job, limit: float) -> list[dict[str, object] | None]:
    """Each output's memorization score with its limit, for the receipt and the
    manifests; notes on ``job.details`` when the prior's outputs could not be checked."""
    memo_json: list[dict[str, object] | None] = [
        None if m is None else m.to_json() | {"limit": limit} for m in job.memos
    ]
    if job.memos:
        job.details["memorization"] = memo_json
    elif job.facts is not None and job.facts.prior is not None and job.outputs:
        job.details["memorization"] = "not checked: the prior lists no photos and none are kept"
    return memo_json


def produce(
    gateway: Gateway,
    request: RunRequest,
    job: Job,
    backend: Backend | None,
) -> tuple[list[Any], list[Reference] | None]:
    """Run the job's model: the personal exemplar restoration for an exemplars prior,
    else the backend (diffusers unless given). Also returns the prior's photos when
    they were decrypted here (the exemplars), so the memorization check reuses them."""
    assert job.facts is not None
    prior = job.facts.prior
    if prior is not None and prior.kind == "exemplars":
        if request.purpose != "restore":
            raise InputError(
                "an exemplars prior restores photos of its subject; it cannot generate"
            )
        from consentry.generation.backends.personal import restore_face_photo
        from consentry.generation.exemplars import load_exemplars

        exemplars = load_exemplars(
            gateway.registry,
            prior_store_path(gateway.registry, prior.registered_sha256, prior.kind),
            prior.registered_sha256,
        )
        if exemplars.subject_id != prior.subject_id:
            raise InputError(f"prior {prior.id}: its manifest is for another subject")
        source = job.images[0]
        personal = restore_face_photo(
            gateway.engine, source.pixels, list(exemplars.photos), is_jpeg=source.format == "JPEG"
        )
        job.details["restoration"] = personal.details()
        references = [
            as_reference(sha, photo)
            for sha, photo in zip(exemplars.photo_sha256, exemplars.photos, strict=True)
        ]
        return [Image.fromarray(personal.image)], references
    prior_ref = _prior_ref(gateway.registry, prior)
    if backend is None:
        from consentry.generation.backends.diffusers_backend import DiffusersBackend
        from consentry.generation.placement import resolve_placement

        placement = resolve_placement(request.device, request.dtype)
        backend = DiffusersBackend(request.model_dir, placement)
    if request.purpose == "generate":
        produced = backend.text2img(
            request.prompt, request.steps, request.size, request.seed, prior_ref
        )
    else:
        source_image = Image.fromarray(job.images[0].pixels).resize((request.size, request.size))
        produced = backend.img2img(
            source_image, request.prompt, request.strength, request.steps, request.seed, prior_ref
        )
    return list(produced), None


def memorization(
    gateway: Gateway,
    prior: PriorFact | None,
    outputs: Sequence[LoadedImage],
    references: list[Reference] | None,
) -> list[MemorizationScore | None]:
    """Each output's memorization score against the prior's photos.

    [] without a prior, or for a prior registered without a photo list whose subject
    has no kept photos (an externally trained file: nothing to compare with; the
    receipt says so). Raises when listed photos cannot be read, or the subject was
    erased: the job is refused.
    """
    if prior is None:
        return []
    if references is None:
        with gateway.registry.db.read() as session:
            row = session.get(Prior, prior.id)
        if row is None:
            raise NotFoundError(f"no prior {prior.id!r}")
        references = prior_references(gateway.registry, row)
    if not references:
        return []  # a prior registered without its photos, none kept: nothing to compare
    return [memorization_score(gateway.engine, image.pixels, references) for image in outputs]


def _prior_ref(registry: Registry, prior: PriorFact | None) -> PriorRef | None:
    if prior is None:
        return None
    return PriorRef(
        prior_store_path(registry, prior.registered_sha256, prior.kind),
        prior.kind,
        prior.registered_sha256,
    )


def sign_outputs(
    registry: Registry,
    decision: Decision,
    outputs: list[bytes],
    request: RunRequest,
    job: Job,
    memorization: Sequence[dict[str, object] | None],
    note: str,
) -> list[bytes]:
    from consentry.provenance.sign import sign_output

    with registry.db.read() as session:
        grants = [session.get(Grant, g) for g in decision.grants]
        prior = (
            session.exec(select(Prior).where(Prior.sha256 == decision.prior_sha256)).first()
            if decision.prior_sha256
            else None
        )
    parent = None
    if request.purpose == "restore" and job.images:
        parent = png(Image.fromarray(job.images[0].pixels))
    return [
        sign_output(
            registry,
            data,
            "image/png",
            action=request.purpose,  # type: ignore[arg-type]
            decision=decision,
            grants=[g for g in grants if g is not None],
            prior=prior,
            parent=parent,
            memorization=memo,
            checkpoint_note=note,
            output_index=n,
        )
        for n, (data, memo) in enumerate(
            zip(outputs, list(memorization) or [None] * len(outputs), strict=True)
        )
    ]
