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
- Checkpoints: without a :class:`~consentry.registry.checkpointer.Checkpointer`
  every decision signs a checkpoint of the whole log (per-decision mode, the
  library default and the service's ``--checkpoint-every-decision`` baseline).
  With one, checkpoints come on its cadence: a receipt carries its log index at
  once and its proof (C2SP tlog-proof) only when ``wait_for_proof`` is set or a
  checkpoint already covers it; a released output always waits (bounded, see
  :meth:`Checkpointer.covering`) for a checkpoint covering its decision, so its
  manifest carries the proof and verifies offline.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

from PIL import Image
from sqlmodel import select

from consentry.errors import (
    ConsentryError,
    ErasedError,
    InputError,
    LogIntegrityError,
    NotFoundError,
    PriorOwnerError,
)
from consentry.faces.engine import FaceEngine
from consentry.faces.images import LoadedImage, load_image
from consentry.faces.scan import scan_images
from consentry.generation.aliases import AliasMatcher
from consentry.generation.backends.base import Backend, PriorRef
from consentry.generation.memorization import (
    MemorizationScore,
    Reference,
    as_reference,
    memorization_score,
    prior_references,
)
from consentry.generation.policy import (
    REGISTERED_PERSON,
    FaceFact,
    GrantFact,
    JobFacts,
    Limits,
    PriorFact,
    Verdict,
    decide,
    redact_reasons,
)
from consentry.hashing import sha256_file
from consentry.identity.index import IdentityIndex
from consentry.registry.biometrics import opted_out_subjects
from consentry.registry.checkpointer import Checkpointer, tlog_proof
from consentry.registry.decisions import record_decision
from consentry.registry.models import Decision, Grant, Prior
from consentry.registry.prior_files import prior_store_path
from consentry.registry.statements import format_time
from consentry.registry.store import Registry

__all__ = [
    "INTEGRITY_PREFIX",
    "CheckRequest",
    "Gateway",
    "Receipt",
    "RunRequest",
    "grant_facts",
    "is_integrity_failure",
    "run_job",
]


INTEGRITY_PREFIX = "integrity error: "
_log = logging.getLogger("consentry.gateway")


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


def is_integrity_failure(receipt: Receipt) -> bool:
    """Whether a refusal was for an integrity error (rows contradict the signed log):
    the CLI exits 2 for it."""
    return any(INTEGRITY_PREFIX in reason for reason in receipt.reasons)


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
    outputs: list[bytes] = field(default_factory=list)  # signed PNGs, only when allowed
    details: dict[str, object] = field(default_factory=dict)  # restoration, memorization
    proof: str | None = None  # C2SP tlog-proof of the decision, once a checkpoint covers it

    def for_grantee(
        self,
        requester: str,
        visible_subjects: Iterable[str],
        own_grants: Iterable[str],
        hidden_names: Iterable[str] = (),
    ) -> Receipt:
        """The receipt a grantee may read (what the HTTP service sends).

        Every subject the grantee holds no grant from (``visible_subjects`` are
        those it holds any grant from) becomes "a registered person" in the
        reasons, ``subjects`` and ``faces``; lines about other grantees' grants are
        dropped (see :func:`~consentry.generation.policy.redact_reasons`); only
        the grantee's own grants are listed. The logged decision is unchanged:
        the operator keeps every id.
        """
        visible = set(visible_subjects)
        mine = set(own_grants)

        def shown(subject: object) -> object:
            return subject if subject in visible else REGISTERED_PERSON

        faces = [
            face | {"subjects": [shown(s) for s in cast(list[object], face.get("subjects", []))]}
            for face in self.faces
        ]
        return replace(
            self,
            reasons=redact_reasons(self.reasons, requester, visible, mine, hidden_names),
            grants=tuple(g for g in self.grants if g in mine),
            subjects=tuple(str(shown(s)) for s in self.subjects),
            faces=faces,
        )

    def to_json(self) -> dict[str, object]:
        return (
            {
                "allowed": self.allowed,
                "reasons": list(self.reasons),
                "decision": self.decision_id,
                "log_index": self.log_index,
                "grants": list(self.grants),
                "subjects": list(self.subjects),
                "faces": self.faces,
            }
            | ({"details": self.details} if self.details else {})
            | ({"proof": self.proof} if self.proof is not None else {})
        )


@dataclass(frozen=True)
class _PreCheck:
    grantee_id: str | None
    verdict: Verdict
    prior_sha: str | None
    inputs: list[str]
    shown: list[dict[str, object]]
    facts: JobFacts | None
    images: list[LoadedImage]

    def receipt(self, decision: Decision | None, outputs: Sequence[bytes] = ()) -> Receipt:
        return Receipt(
            self.verdict.allowed and decision is not None,
            self.verdict.reasons,
            decision.id if decision else None,
            decision.log_index if decision else None,
            self.verdict.grants_used,
            self.verdict.subjects,
            self.shown,
            list(outputs),
        )


class Gateway:
    """Decides jobs for one registry with one face engine.

    Thread-safe for concurrent :meth:`check` calls when the engine is (sface is):
    the consent state and the index take their own locks, each decision is its own
    write transaction. ``checkpointer``: sign checkpoints on its cadence instead
    of one per decision; ``wait_for_proof``: a check (no outputs) waits for a
    checkpoint covering its decision and its receipt carries the proof.
    """

    def __init__(
        self,
        registry: Registry,
        engine: FaceEngine,
        *,
        refuse_unknown_faces: bool = False,
        limits: Limits | None = None,
        checkpointer: Checkpointer | None = None,
        wait_for_proof: bool = False,
    ) -> None:
        self.registry = registry
        self.engine = engine
        self.refuse_unknown_faces = refuse_unknown_faces
        self.limits = limits or Limits()
        self.checkpointer = checkpointer
        self.wait_for_proof = wait_for_proof
        self.index = IdentityIndex(registry, engine.name, engine.dim)
        self._aliases: tuple[tuple[object, ...], AliasMatcher] | None = None

    # ------------------------------------------------------------------ facts
    def _faces(
        self, images: Sequence[LoadedImage]
    ) -> tuple[list[FaceFact], list[dict[str, object]]]:
        """Every face of every image as the face scan sees it (every frame, every
        view of transparency, every orientation, small faces by tiling: see
        consentry.faces.scan), each matched against the index. The face cap is
        checked across all images before anything is embedded. No images: no face
        work, and no lock of the index is taken (a prompt-only check)."""
        if not images:
            return [], []
        self.index.refresh()
        facts: list[FaceFact] = []
        shown: list[dict[str, object]] = []
        scanned = scan_images(self.engine, images, self.limits.max_faces)
        for number, faces in enumerate(scanned):
            if any(not face.embeddings for face in faces):
                raise InputError(f"image {number}: a face could not be embedded")
            matched = self.index.match_groups([face.embeddings for face in faces])
            for position, (face, matches) in enumerate(zip(faces, matched, strict=True)):
                ranked = [(m.subject_id, m.similarity) for m in matches]
                if not ranked and face.incidental:
                    continue  # part of a larger face, or a weak turned look (consentry.faces.scan)
                if not ranked:
                    facts.append(FaceFact(number, position, None, 0.0))
                for subject_id, similarity in ranked:
                    facts.append(FaceFact(number, position, subject_id, similarity))
                shown.append(
                    {
                        "image": number,
                        "frame": face.frame,
                        "bbox": [round(v, 1) for v in face.face.bbox],
                        "subjects": [subject_id for subject_id, _ in ranked],
                    }
                )
        return facts, shown

    def _prior(self, prior_id: str | None) -> PriorFact | None:
        """The prior as the signed log registered it (subject, SHA-256, kind), and the
        SHA-256 of its file now. A prior row the log does not hold is an integrity error.
        The consent state as the job's refresh left it (see :meth:`_pre`)."""
        if prior_id is None:
            return None
        state = self.registry.consent
        signed = state.priors.get(prior_id)
        with self.registry.db.read() as session:
            row = session.get(Prior, prior_id)
        if signed is None:
            if row is not None:
                raise LogIntegrityError(
                    f"prior {prior_id} has a database row but no signed log entry (forged row)"
                )
            raise NotFoundError(f"no prior {prior_id!r}: see 'consentry prior list'")
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
        path = prior_store_path(self.registry, signed.sha256, signed.kind)
        file_sha256 = _hash_file(path) if path.exists() else "missing"
        return PriorFact(signed.id, signed.subject, signed.sha256, file_sha256, signed.kind)

    def _grants(self, subjects: set[str], prior: PriorFact | None) -> list[GrantFact]:
        """Grant facts from the consent state as the caller's refresh left it (the
        job's one refresh in :meth:`_pre`; ``run_job`` refreshes before its post-check)."""
        return grant_facts(self.registry, subjects, prior, refresh=False)

    def _prompt_subjects(self, prompt: str) -> list[str]:
        if not prompt.strip():
            return []
        return list(dict.fromkeys(subject for subject, _ in self._matcher().find(prompt)))

    def _matcher(self) -> AliasMatcher:
        """The alias matcher over every subject of the signed log as followed (names and
        aliases as signed, never the rows; the job's refresh, see :meth:`_pre`), rebuilt
        only when subjects were added (subjects are append-only and their names and
        aliases never change)."""
        state = self.registry.consent
        stamp: tuple[object, ...] = state.subject_stamp()
        if self._aliases is None or self._aliases[0] != stamp:
            subjects = state.subjects_in_order()
            matcher = AliasMatcher((s.id, [s.display_name, *s.aliases]) for s in subjects)
            self._aliases = (stamp, matcher)
        return self._aliases[1]

    # ------------------------------------------------------------------ decide
    def check(self, request: CheckRequest) -> Receipt:
        """Decide a job without running it, and log the decision."""
        pre = self._pre(request)
        decision, verdict = self._record(
            pre.grantee_id, request.purpose, pre.verdict, pre.prior_sha, pre.inputs, []
        )
        receipt = replace(pre, verdict=verdict).receipt(decision)
        if decision is None or self.checkpointer is None or not self.wait_for_proof:
            return receipt
        try:
            proof = self.checkpointer.proof(decision.log_index)
        except ConsentryError as exc:  # a truncated or rewritten log: nothing is allowed
            return replace(receipt, allowed=False, reasons=(*receipt.reasons, _no_checkpoint(exc)))
        return replace(receipt, proof=tlog_proof(proof))

    def covering(self, decision: Decision) -> str:
        """A signed checkpoint note covering ``decision`` (per-decision mode: the one
        its record signed; cadence: waits, bounded, see :meth:`Checkpointer.covering`)."""
        if self.checkpointer is None:
            return self.registry.checkpoint()
        return self.checkpointer.covering(decision.log_index)

    def _pre(self, request: CheckRequest) -> _PreCheck:
        """Gather the facts and decide, logging nothing; never raises, except
        ``RollbackError`` when the log no longer extends the witness (every job fails).

        One refresh of the consent state per job, at its start: every fact below
        (requester, prompt subjects, prior, grants, opt-outs) is read from the signed
        log as followed then or later (facts only grow), never re-read per fact. The
        rows' check re-reads the tail in its own read session (race-free, see
        :meth:`ConsentState.check_rows`); faces refresh the index (which follows the
        same state). An allow is re-checked against the tail inside the decision's
        write transaction (``record_decision``): a revocation, erasure or opt-out
        committed since this refresh still wins.
        """
        self.registry.check_not_rolled_back()
        grantee_id: str | None = None
        inputs: list[str] = []
        prior_sha: str | None = None
        shown: list[dict[str, object]] = []
        facts: JobFacts | None = None
        images: list[LoadedImage] = []
        try:
            state = self.registry.consent
            state.refresh()  # the job's one refresh (see the docstring)
            grantee_id = state.resolve_grantee(request.grantee).id
            # bounded before any work: a library caller gets the CLI's and HTTP's limits
            self.limits.check_job(images=len(request.images), prompt=request.prompt)
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
                opted_out=state.opted_out_among(involved),
                images=len(images),
                pixels=max((i.width * i.height for i in images), default=0),
                steps=request.steps,
                limits=self.limits,
            )
            verdict = decide(facts)
        except LogIntegrityError as exc:
            verdict = Verdict(False, (f"refused: {INTEGRITY_PREFIX}{exc}",), (), ())
            _log.error("job of %r refused: integrity error: %s", request.grantee, exc)
            if grantee_id is None:
                grantee_id = self._logged_requester(request.grantee)
        except ConsentryError as exc:
            verdict = Verdict(False, (f"refused: {exc}",), (), ())
        except Exception as exc:  # fail closed on anything unexpected
            verdict = Verdict(False, (f"internal error: {type(exc).__name__}: {exc}",), (), ())
        return _PreCheck(grantee_id, verdict, prior_sha, inputs, shown, facts, images)

    def _logged_requester(self, ref: str) -> str | None:
        """The requester's id from its row, only to log a refusal when the signed state
        cannot be read (a refusal never opens the gate, whatever the row says)."""
        try:
            return self.registry.get_grantee(ref).id
        except ConsentryError:
            return None

    def _record(
        self,
        grantee_id: str | None,
        purpose: str,
        verdict: Verdict,
        prior_sha: str | None,
        inputs: list[str],
        outputs: list[str],
    ) -> tuple[Decision | None, Verdict]:
        """Log the verdict; an unknown requester or purpose cannot be logged.

        Returns the decision and the verdict as logged: an allow that a revocation or
        erasure committed since the facts were read overtook is logged, and returned,
        as a refusal (``record_decision`` re-checks inside its write transaction).
        """
        if grantee_id is None:
            return None, verdict
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
                outputs,
            )
        except InputError:
            return None, verdict
        try:
            if self.checkpointer is None:  # per-decision mode; else on the cadence
                self.registry.checkpoint()
        except ConsentryError as exc:  # a truncated or rewritten log: nothing is allowed
            _log.error("decision %s logged, but no checkpoint: %s", decision.id, exc)
            reasons = (*(verdict.reasons if not verdict.allowed else ()), _no_checkpoint(exc))
            return decision, Verdict(False, reasons, verdict.grants_used, verdict.subjects)
        if verdict.allowed and not decision.allowed:
            _log.warning("allow overtaken at release: %s", "; ".join(decision.reasons))
            verdict = Verdict(False, tuple(decision.reasons), verdict.grants_used, verdict.subjects)
        return decision, verdict


def _no_checkpoint(exc: Exception) -> str:
    return f"refused: {INTEGRITY_PREFIX}the log cannot be checkpointed: {exc}"


@dataclass(frozen=True)
class RunRequest:
    """A job to run: ``generate`` (text to image) or ``restore`` (img2img of ``image``)."""

    grantee: str
    purpose: str  # "generate" | "restore"
    prompt: str
    model_dir: Path
    image: Path | bytes | None = None
    prior: str | None = None
    steps: int = 20
    size: int = 64
    seed: int = 0
    strength: float = 0.6
    device: str | None = None  # placement names; see consentry.generation.placement
    dtype: str | None = None


def _png(image: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def run_job(gateway: Gateway, request: RunRequest, backend: Backend | None = None) -> Receipt:
    """Pre-check, run the backend, post-check the outputs, re-check revocations at
    release, log the decision and sign what is released.

    Nothing is released unless the final verdict allows it; any exception at any
    stage becomes a logged refusal (fail closed).
    """
    if request.purpose not in ("generate", "restore"):
        raise InputError("a job's purpose is generate or restore")
    if request.purpose == "restore" and request.image is None:
        raise InputError("restore needs an input image")
    images = [request.image] if request.image is not None else []
    pre = gateway._pre(
        CheckRequest(
            request.grantee, request.purpose, images, request.prompt, request.prior, request.steps
        )
    )
    if not pre.verdict.allowed or pre.facts is None:
        decision, verdict = gateway._record(
            pre.grantee_id, request.purpose, pre.verdict, pre.prior_sha, pre.inputs, []
        )
        return replace(pre, verdict=verdict).receipt(decision)
    outputs: list[bytes] = []
    memos: list[MemorizationScore | None] = []
    details: dict[str, object] = {}
    try:
        produced, references = _produce(gateway, request, pre, backend, details)
        outputs = [_png(image) for image in produced]
        loaded = [load_image(data) for data in outputs]
        output_faces, _ = gateway._faces(loaded)
        memos = _memorization(gateway, pre.facts.prior, loaded, references)
        copies = [m.ssim for m in memos if m is not None]
        involved = set(pre.facts.known_subjects) | {
            f.subject_id for f in output_faces if f.subject_id
        }
        gateway.registry.consent.refresh()  # the post-check's facts: the log as it is now
        post = replace(
            pre.facts,
            stage="post",
            now=format_time(gateway.registry.now()),
            output_faces=tuple(output_faces),
            grants=tuple(gateway._grants(involved, pre.facts.prior)),  # revocations re-read
            known_subjects=frozenset(involved),
            opted_out=opted_out_subjects(gateway.registry, involved),
            copy_ssim=max(copies) if copies else None,
        )
        verdict = decide(post)
    except LogIntegrityError as exc:
        verdict = Verdict(False, (f"refused while running: {INTEGRITY_PREFIX}{exc}",), (), ())
        _log.error("job of %r refused while running: integrity error: %s", request.grantee, exc)
    except ConsentryError as exc:
        verdict = Verdict(False, (f"refused while running: {exc}",), (), ())
    except Exception as exc:  # fail closed on anything unexpected
        verdict = Verdict(
            False, (f"internal error while running: {type(exc).__name__}: {exc}",), (), ()
        )
    hashes = [hashlib.sha256(data).hexdigest() for data in outputs]
    # the post-check read revocations above; the record re-checks them (and erasures)
    # inside its write transaction, so one committed since is not missed
    decision, verdict = gateway._record(
        pre.grantee_id, request.purpose, verdict, pre.prior_sha, pre.inputs, hashes
    )
    limit = gateway.limits.max_copy_ssim
    memo_json = [None if m is None else m.to_json() | {"limit": limit} for m in memos]
    if memos:
        details["memorization"] = memo_json
    elif pre.facts.prior is not None and outputs:
        details["memorization"] = "not checked: the prior lists no photos and none are kept"
    final = _PreCheck(
        pre.grantee_id, verdict, pre.prior_sha, pre.inputs, pre.shown, pre.facts, pre.images
    )
    if decision is None or not verdict.allowed:
        return replace(final.receipt(decision), details=details)
    try:  # the proof first: a checkpoint covering the decision (bounded wait on the cadence)
        note = gateway.covering(decision)
        signed = _sign_all(gateway.registry, decision, outputs, request, pre, memo_json, note)
    except Exception as exc:  # fail closed: nothing unsigned is released
        refusal = Verdict(
            False, (f"outputs not signed, withheld: {type(exc).__name__}: {exc}",), (), ()
        )
        logged, refusal = gateway._record(
            pre.grantee_id, request.purpose, refusal, pre.prior_sha, pre.inputs, hashes
        )
        return replace(final, verdict=refusal).receipt(logged)
    return replace(final.receipt(decision, signed), details=details)


def _produce(
    gateway: Gateway,
    request: RunRequest,
    pre: _PreCheck,
    backend: Backend | None,
    details: dict[str, object],
) -> tuple[list[Any], list[Reference] | None]:
    """Run the job's model: the personal exemplar restoration for an exemplars prior,
    else the backend (diffusers unless given). Also returns the prior's photos when
    they were decrypted here (the exemplars), so the memorization check reuses them."""
    assert pre.facts is not None
    prior = pre.facts.prior
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
        source = pre.images[0]
        personal = restore_face_photo(
            gateway.engine, source.pixels, list(exemplars.photos), is_jpeg=source.format == "JPEG"
        )
        details["restoration"] = personal.details()
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
        source_image = Image.fromarray(pre.images[0].pixels).resize((request.size, request.size))
        produced = backend.img2img(
            source_image, request.prompt, request.strength, request.steps, request.seed, prior_ref
        )
    return list(produced), None


def _memorization(
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


def _sign_all(
    registry: Registry,
    decision: Decision,
    outputs: list[bytes],
    request: RunRequest,
    pre: _PreCheck,
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
    if request.purpose == "restore" and pre.images:
        parent = _png(Image.fromarray(pre.images[0].pixels))
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
        )
        for data, memo in zip(outputs, list(memorization) or [None] * len(outputs), strict=True)
    ]
