"""Fact gathering: what the policy decides on, read from the signed log and the images.

Invariants
- Facts come from the registry at the time of the check, from the signed log as
  followed (``registry.consent``), never from rows alone: grants with their
  revocation state (:func:`grant_facts`; the rows are checked against the log, a
  mismatch is a :class:`~consentry.errors.LogIntegrityError`), the prior as the
  log registered it with the SHA-256 of its file now, hashed on every load
  (:func:`prior_fact`), the subjects the prompt names (:class:`PromptSubjects`),
  and every registered face in every input (:func:`face_facts`, over the one face
  pipeline :func:`consentry.identity.lookup.lookup_faces`).
- One refresh of the consent state per job: the gateway refreshes once at the
  job's start; the readers here take ``refresh=False`` state as it is.
- No biometric data leaves this module: faces become (image, position, subject,
  similarity) facts and a shown list of boxes and subject ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from consentry.errors import (
    ErasedError,
    InputError,
    LogIntegrityError,
    NotFoundError,
    PriorOwnerError,
)
from consentry.faces.engine import FaceEngine
from consentry.faces.images import LoadedImage
from consentry.gate.aliases import AliasMatcher
from consentry.gate.policy import FaceFact, GrantFact, PriorFact
from consentry.hashing import sha256_file
from consentry.identity.index import IdentityIndex
from consentry.identity.lookup import lookup_faces
from consentry.registry.models import Prior
from consentry.registry.prior_files import prior_store_path
from consentry.registry.store import Registry

__all__ = ["PromptSubjects", "face_facts", "grant_facts", "prior_fact"]


def _hash_file(path: Path) -> str:
    try:
        return sha256_file(path)
    except OSError as exc:
        raise InputError(f"cannot read the prior file {path}: {exc.strerror}") from exc


def grant_facts(
    registry: Registry, subjects: set[str], prior: PriorFact | None, *, refresh: bool = True
) -> list[GrantFact]:
    """Every grant of ``subjects`` and every grant naming ``prior``, in log order
    (so the oldest covering grant is the one a decision names), with its revocation
    state: all from the signed log as followed now (``registry.consent``), never from
    grant or revocation rows. The rows of ``subjects`` (subject, grants, revocations)
    are checked against it: a mismatch is a LogIntegrityError.

    ``refresh=False``: the caller followed the log for this job already (the
    gateway's one refresh per job), so only the rows' check reads the tail."""
    state = registry.consent
    if refresh:
        state.refresh()
    if subjects:
        state.check_rows(subjects)
    sha = prior.registered_sha256 if prior is not None else None
    return [
        GrantFact(
            g.id,
            g.subject,
            g.grantee,
            g.purposes,
            g.priors,
            g.not_before,
            g.not_after,
            g.id in state.revoked,
        )
        for g in state.grants_for(subjects, sha)
    ]


def face_facts(
    engine: FaceEngine, index: IdentityIndex, images: Sequence[LoadedImage], max_faces: int
) -> tuple[list[FaceFact], list[dict[str, object]]]:
    """Every face of every image, matched against the index (the one face pipeline,
    with the face cap over all images before anything is embedded), as policy facts
    (one per subject a face matches, or one with no subject for an unknown face) and
    as the receipt's shown list (image, face position as in the facts, frame, box,
    subject ids, and under
    ``uncertain`` the subjects that are only uncertain candidates, see
    :attr:`FaceFact.certain`)."""
    facts: list[FaceFact] = []
    shown: list[dict[str, object]] = []
    for per_image in lookup_faces(engine, index, images, max_faces):
        for found in per_image:
            ranked = [(m.subject_id, m.similarity, m.certain) for m in found.matches]
            if not ranked:
                facts.append(FaceFact(found.image, found.position, None, 0.0))
            for subject_id, similarity, certain in ranked:
                facts.append(
                    FaceFact(found.image, found.position, subject_id, similarity, certain)
                )
            shown.append(
                {
                    "image": found.image,
                    "face": found.position,
                    "frame": found.face.frame,
                    "bbox": found.bbox,
                    "subjects": [subject_id for subject_id, _, _ in ranked],
                }
                | (  # only a face with an uncertain candidate gets the key
                    {"uncertain": [s for s, _, certain in ranked if not certain]}
                    if not all(certain for _, _, certain in ranked)
                    else {}
                )
            )
    return facts, shown


def prior_fact(registry: Registry, prior_id: str | None) -> PriorFact | None:
    """The prior as the signed log registered it (subject, SHA-256, kind), and the
    SHA-256 of its file now. A prior row the log does not hold is an integrity error.
    The consent state as the job's refresh left it (see
    :meth:`consentry.gate.Gateway._pre`)."""
    if prior_id is None:
        return None
    state = registry.consent
    signed = state.priors.get(prior_id)
    with registry.db.read() as session:
        row = session.get(Prior, prior_id)
    if signed is None:
        if row is not None:
            raise LogIntegrityError(
                f"prior {prior_id} has a database row but no signed log entry (forged row)"
            )
        raise NotFoundError(f"no prior {prior_id!r}", hint="see 'consentry prior list'")
    if row is None or (row.subject_id, row.sha256, row.kind, row.details) != (
        signed.subject,
        signed.sha256,
        signed.kind,
        signed.details,
    ):
        raise LogIntegrityError(
            f"prior {prior_id}: its row is missing or differs from the signed log"
        )
    if signed.subject in state.erased:
        raise ErasedError(
            f"prior {prior_id} is of subject {signed.subject}, who was erased: "
            "their priors can no longer be used"
        )
    owners = {p.subject for p in state.priors_with_sha(signed.sha256)}
    if owners != {signed.subject}:
        # registries made before a SHA-256 was bound to one subject may hold the same
        # file for several: whose likeness it carries cannot be told, so it is unusable
        raise PriorOwnerError(
            f"prior {prior_id}: its file (SHA-256 {signed.sha256[:16]}...) is registered "
            f"for {len(owners)} subjects; a prior file belongs to one subject"
        )
    path = prior_store_path(registry, signed.sha256, signed.kind)
    file_sha256 = _hash_file(path) if path.exists() else "missing"
    return PriorFact(signed.id, signed.subject, signed.sha256, file_sha256, signed.kind)


class PromptSubjects:
    """The subjects a prompt names: an alias matcher over every subject of the signed
    log as followed (names and aliases as signed, never the rows; the job's refresh),
    rebuilt only when subjects were added (subjects are append-only and their names
    and aliases never change)."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._cached: tuple[tuple[object, ...], AliasMatcher] | None = None

    def matcher(self) -> AliasMatcher:
        state = self.registry.consent
        stamp: tuple[object, ...] = state.subject_stamp()
        if self._cached is None or self._cached[0] != stamp:
            subjects = state.subjects_in_order()
            matcher = AliasMatcher((s.id, [s.display_name, *s.aliases]) for s in subjects)
            self._cached = (stamp, matcher)
        return self._cached[1]

    def find(self, prompt: str) -> list[str]:
        """The subjects ``prompt`` names, each once, in order of first mention."""
        if not prompt.strip():
            return []
        return list(dict.fromkeys(subject for subject, _ in self.matcher().find(prompt)))
