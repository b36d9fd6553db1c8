"""The gateway: gather the facts of a job, decide, and log the decision.

Invariants
- Every decision, allow or refuse, is one signed log entry (requester, purpose,
  reasons, hashes of inputs, outputs and prior; no biometric data), and the
  caller gets a receipt with its log index.
- Fail closed: an exception while gathering facts or deciding becomes a
  refusal with the reason; the refusal is still logged when the requester is a
  known grantee.
- Facts come from the registry at the time of the check: grants with their
  revocation state, every registered face in every input, the subjects the
  prompt names, and the prior with the SHA-256 of its file, hashed on every load.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sqlmodel import col, select

from consentry.errors import ConsentryError, InputError, NotFoundError
from consentry.faces.engine import FaceEngine
from consentry.faces.images import LoadedImage, load_image
from consentry.faces.index import IdentityIndex
from consentry.generation.aliases import AliasMatcher
from consentry.generation.policy import (
    FaceFact,
    GrantFact,
    JobFacts,
    Limits,
    PriorFact,
    Verdict,
    decide,
)
from consentry.registry.decisions import record_decision
from consentry.registry.models import Decision, Grant, Prior, Revocation
from consentry.registry.statements import format_time
from consentry.registry.store import Registry

__all__ = ["CheckRequest", "Gateway", "Receipt", "prior_store_path"]


def prior_store_path(registry: Registry, sha256: str) -> Path:
    """Where the registry keeps a registered prior's file (named by its SHA-256)."""
    return registry.home.root / "priors" / f"{sha256}.safetensors"


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    except OSError as exc:
        raise InputError(f"cannot read the prior file {path}: {exc.strerror}") from exc
    return digest.hexdigest()


@dataclass(frozen=True)
class CheckRequest:
    """A job to decide on: who asks, for what, with which inputs, prompt and prior."""

    grantee: str
    purpose: str
    images: Sequence[Path | bytes] = ()
    prompt: str = ""
    prior: str | None = None  # prior id
    steps: int = 0


@dataclass(frozen=True)
class Receipt:
    """What the caller gets back: the verdict and where it stands in the log."""

    allowed: bool
    reasons: tuple[str, ...]
    decision_id: str | None
    log_index: int | None
    grants: tuple[str, ...] = ()
    subjects: tuple[str, ...] = ()
    faces: list[dict[str, object]] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {
            "allowed": self.allowed,
            "reasons": list(self.reasons),
            "decision": self.decision_id,
            "log_index": self.log_index,
            "grants": list(self.grants),
            "subjects": list(self.subjects),
            "faces": self.faces,
        }


class Gateway:
    """Decides jobs for one registry with one face engine."""

    def __init__(
        self,
        registry: Registry,
        engine: FaceEngine,
        *,
        refuse_unknown_faces: bool = False,
        limits: Limits | None = None,
    ) -> None:
        self.registry = registry
        self.engine = engine
        self.refuse_unknown_faces = refuse_unknown_faces
        self.limits = limits or Limits()
        self.index = IdentityIndex(registry, engine.name, engine.dim)

    # ------------------------------------------------------------------ facts
    def _faces(
        self, images: Sequence[LoadedImage]
    ) -> tuple[list[FaceFact], list[dict[str, object]]]:
        self.index.refresh()
        facts: list[FaceFact] = []
        shown: list[dict[str, object]] = []
        for number, image in enumerate(images):
            faces = self.engine.analyze(image.pixels)
            vectors = [f.embedding for f in faces if f.embedding is not None]
            if len(vectors) != len(faces):
                raise InputError(f"image {number}: a face could not be embedded")
            matches = self.index.search(np.stack(vectors)) if vectors else []
            for position, (face, found) in enumerate(zip(faces, matches, strict=True)):
                if not found:
                    facts.append(FaceFact(number, position, None, 0.0))
                for match in found:
                    facts.append(FaceFact(number, position, match.subject_id, match.similarity))
                shown.append(
                    {
                        "image": number,
                        "bbox": [round(v, 1) for v in face.bbox],
                        "subjects": [m.subject_id for m in found],
                    }
                )
        return facts, shown

    def _prior(self, prior_id: str | None) -> PriorFact | None:
        if prior_id is None:
            return None
        with self.registry.db.read() as session:
            row = session.get(Prior, prior_id)
        if row is None:
            raise NotFoundError(f"no prior {prior_id!r}: see 'consentry prior list'")
        path = prior_store_path(self.registry, row.sha256)
        file_sha256 = _hash_file(path) if path.exists() else "missing"
        return PriorFact(row.id, row.subject_id, row.sha256, file_sha256, row.kind)

    def _grants(self, subjects: set[str], prior: PriorFact | None) -> list[GrantFact]:
        with self.registry.db.read() as session:
            query = select(Grant).where(col(Grant.subject_id).in_(sorted(subjects)))
            rows = {g.id: g for g in session.exec(query)}
            if prior is not None:
                for grant in session.exec(select(Grant)):
                    if prior.registered_sha256 in grant.priors:
                        rows[grant.id] = grant
            revoked = {
                r.grant_id
                for r in session.exec(
                    select(Revocation).where(col(Revocation.grant_id).in_(sorted(rows)))
                )
            }
        return [
            GrantFact(
                g.id,
                g.subject_id,
                g.grantee_id,
                tuple(g.purposes),
                tuple(g.priors),
                g.not_before,
                g.not_after,
                g.id in revoked,
            )
            for g in rows.values()
        ]

    def _prompt_subjects(self, prompt: str) -> list[str]:
        if not prompt.strip():
            return []
        matcher = AliasMatcher(
            (s.id, [s.display_name, *s.aliases]) for s in self.registry.list_subjects()
        )
        return list(dict.fromkeys(subject for subject, _ in matcher.find(prompt)))

    # ------------------------------------------------------------------ decide
    def check(self, request: CheckRequest) -> Receipt:
        """Decide a job without running it, and log the decision."""
        grantee_id: str | None = None
        inputs: list[str] = []
        prior_sha: str | None = None
        shown: list[dict[str, object]] = []
        try:
            grantee_id = self.registry.get_grantee(request.grantee).id
            images = [load_image(source) for source in request.images]
            inputs = [image.sha256 for image in images]
            faces, shown = self._faces(images)
            prior = self._prior(request.prior)
            prior_sha = prior.registered_sha256 if prior else None
            prompt_subjects = self._prompt_subjects(request.prompt)
            involved = {f.subject_id for f in faces if f.subject_id} | set(prompt_subjects)
            if prior is not None:
                involved.add(prior.subject_id)
            facts = JobFacts(
                requester=grantee_id,
                purpose=request.purpose,
                now=format_time(self.registry.now()),
                input_faces=tuple(faces),
                prior=prior,
                prompt_subjects=tuple(prompt_subjects),
                grants=tuple(self._grants(involved, prior)),
                known_subjects=frozenset(involved),
                refuse_unknown_faces=self.refuse_unknown_faces,
                images=len(images),
                pixels=max((i.width * i.height for i in images), default=0),
                steps=request.steps,
                limits=self.limits,
            )
            verdict = decide(facts)
        except ConsentryError as exc:
            verdict = Verdict(False, (f"refused: {exc}",), (), ())
        except Exception as exc:  # fail closed on anything unexpected
            verdict = Verdict(False, (f"internal error: {type(exc).__name__}: {exc}",), (), ())
        decision = self._record(grantee_id, request.purpose, verdict, prior_sha, inputs)
        return Receipt(
            verdict.allowed and decision is not None,
            verdict.reasons,
            decision.id if decision else None,
            decision.log_index if decision else None,
            verdict.grants_used,
            verdict.subjects,
            shown,
        )

    def _record(
        self,
        grantee_id: str | None,
        purpose: str,
        verdict: Verdict,
        prior_sha: str | None,
        inputs: list[str],
    ) -> Decision | None:
        """Log the verdict; an unknown requester or purpose cannot be logged."""
        if grantee_id is None:
            return None
        try:
            decision = record_decision(
                self.registry,
                grantee_id,
                purpose,
                verdict.allowed,
                list(verdict.reasons),
                list(verdict.grants_used),
                list(verdict.subjects),
                prior_sha,
                inputs,
                [],
            )
        except InputError:
            return None
        self.registry.checkpoint()
        return decision
