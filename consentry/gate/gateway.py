"""The gateway: gather the facts of a job, decide, run, post-check, log, release.

The flow, one module each: image -> faces -> identity lookup
(:mod:`consentry.identity.lookup`) -> consent facts (:mod:`consentry.gate.facts`)
-> policy (:mod:`consentry.gate.policy`) -> backend and post-check
(:mod:`consentry.gate.release`) -> provenance (signing) -> log (the finish step,
:meth:`Gateway._finish`).

Invariants
- Every decision, allow or refuse, is one signed log entry (requester, purpose,
  reasons, hashes of inputs, outputs and prior; no biometric data), written by
  the one finish step, and the caller gets a receipt with its log index.
- Fail closed: an exception while gathering facts, deciding or running becomes a
  refusal with the reason (:func:`~consentry.gate.requests.refusal`); the refusal
  is still logged when the requester is a known grantee.
- One refresh of the consent state per job, at its start (see :meth:`Gateway._pre`);
  the post-check of a run refreshes once more, so a revocation since wins, and the
  record re-checks inside its write transaction.
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
import logging
import time
from dataclasses import replace

from consentry.errors import ConsentryError, InputError, LogIntegrityError
from consentry.faces.engine import FaceEngine
from consentry.faces.images import LoadedImage, load_image
from consentry.gate import release
from consentry.gate.facts import PromptSubjects, face_facts, grant_facts, prior_fact
from consentry.gate.policy import (
    FaceFact,
    GrantFact,
    JobFacts,
    Limits,
    PriorFact,
    Verdict,
    decide,
)
from consentry.gate.requests import (
    INTEGRITY_PREFIX,
    CheckRequest,
    Job,
    Receipt,
    RunRequest,
    refusal,
    refused,
)
from consentry.gate.resume import approved_facts
from consentry.gate.telemetry import DecisionEvent, Outcome, Telemetry
from consentry.generation.backends.base import Backend
from consentry.identity.index import IdentityIndex
from consentry.registry.checkpointer import Checkpointer, tlog_proof
from consentry.registry.decisions import record_decision
from consentry.registry.models import Decision
from consentry.registry.reviews import approval_for, hold_record
from consentry.registry.statements import format_time
from consentry.registry.store import Registry

__all__ = ["Gateway", "run_job"]

_log = logging.getLogger("consentry.gateway")


class Gateway:
    """Decides jobs for one registry with one face engine.

    Thread-safe for concurrent :meth:`check` calls when the engine is (sface is):
    the consent state and the index take their own locks, each decision is its own
    write transaction. ``checkpointer``: sign checkpoints on its cadence instead
    of one per decision; ``wait_for_proof``: a check (no outputs) waits for a
    checkpoint covering its decision and its receipt carries the proof.

    ``_faces``, ``_prior``, ``_grants`` and ``_prompt_subjects`` are the fact
    readers, one method each so a test can inject a fault or a race in one stage.
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
        self._prompts = PromptSubjects(registry)
        self.telemetry = Telemetry()  # watchers: the service's metrics and decision log

    # ------------------------------------------------------------------ facts
    def _faces(self, images: list[LoadedImage]) -> tuple[list[FaceFact], list[dict[str, object]]]:
        """Face facts of ``images`` (inputs or outputs) under the job's face cap."""
        return face_facts(self.engine, self.index, images, self.limits.max_faces)

    def _prior(self, prior_id: str | None) -> PriorFact | None:
        return prior_fact(self.registry, prior_id)

    def _grants(self, subjects: set[str], prior: PriorFact | None) -> list[GrantFact]:
        """Grant facts from the consent state as the caller's refresh left it (the
        job's one refresh in :meth:`_pre`; the post-check refreshes before it reads)."""
        return grant_facts(self.registry, subjects, prior, refresh=False)

    def _prompt_subjects(self, prompt: str) -> list[str]:
        return self._prompts.find(prompt)

    # ------------------------------------------------------------------ decide
    def check(self, request: CheckRequest) -> Receipt:
        """Decide a job without running it, and log the decision."""
        with self.telemetry.timed("pre_check"):
            job = self._pre(request)
        receipt, decision = self._finish(job)
        if decision is None or self.checkpointer is None or not self.wait_for_proof:
            return receipt
        try:
            proof = self.checkpointer.proof(decision.log_index)
        except ConsentryError as exc:  # a truncated or rewritten log: nothing is allowed
            reasons = (*receipt.reasons, _no_checkpoint(exc))
            return replace(receipt, allowed=False, held=False, reasons=reasons)
        return replace(receipt, proof=tlog_proof(proof))

    def run(self, request: RunRequest, backend: Backend | None = None) -> Receipt:
        """Pre-check, run the backend, post-check the outputs, re-check revocations at
        release, log the decision and sign what is released.

        Nothing is released unless the final verdict allows it; any exception at any
        stage becomes a logged refusal (fail closed).
        """
        if request.purpose not in ("generate", "restore"):
            raise InputError("a job's purpose is generate or restore")
        if request.purpose == "restore" and request.image is None:
            raise InputError("restore needs an input image")
        with self.telemetry.timed("pre_check"):
            job = self._pre(request.check_request())
        if not job.verdict.allowed or job.facts is None:
            return self._finish(job)[0]
        try:
            job.verdict = release.post_check(self, request, job, backend)
        except Exception as exc:  # fail closed on anything unexpected
            job.verdict = self._refusal(exc, request.grantee, " while running")
        # the post-check read revocations; the record re-checks them (and erasures)
        # inside its write transaction, so one committed since is not missed
        receipt, decision = self._finish(job)
        if decision is None or not receipt.allowed:
            return receipt
        try:  # the proof first: a checkpoint covering the decision (bounded wait on the cadence)
            note = self.covering(decision)
            memo_json = release.memorization_details(job, self.limits.max_copy_ssim)
            with self.telemetry.timed("sign"):
                signed = release.sign_outputs(
                    self.registry, decision, job.outputs, request, job, memo_json, note
                )
        except Exception as exc:  # fail closed: nothing unsigned is released
            job.verdict = refused(f"outputs not signed, withheld: {type(exc).__name__}: {exc}")
            return self._finish(job)[0]
        return replace(receipt, outputs=signed)

    def covering(self, decision: Decision) -> str:
        """A signed checkpoint note covering ``decision`` (per-decision mode: the one
        its record signed; cadence: waits, bounded, see :meth:`Checkpointer.covering`)."""
        if self.checkpointer is None:
            return self.registry.checkpoint()
        return self.checkpointer.covering(decision.log_index)

    def _pre(self, request: CheckRequest) -> Job:
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
        job = Job(request.purpose)
        try:
            state = self.registry.consent
            state.refresh()  # the job's one refresh (see the docstring)
            job.grantee_id = state.resolve_grantee(request.grantee).id
            # bounded before any work: a library caller gets the CLI's and HTTP's limits
            self.limits.check_job(images=len(request.images), prompt=request.prompt)
            job.images = [load_image(source) for source in request.images]
            job.inputs = [image.sha256 for image in job.images]
            job.facts = self._gather(request, job)
            notes: list[str] = []
            if request.review is not None:  # resume a held job under its approval
                job.facts, notes, job.review = self._resume(request.review, job)
            job.verdict = decide(job.facts)
            if job.verdict.allowed and notes:
                job.verdict = replace(job.verdict, reasons=(*job.verdict.reasons, *notes))
            if job.verdict.held:
                band = (self.index.review_threshold, self.index.threshold)
                job.held = hold_record(job.verdict.holds, job.shown, band)
        except Exception as exc:  # fail closed on anything unexpected
            job.verdict = self._refusal(exc, request.grantee)
            if isinstance(exc, LogIntegrityError) and job.grantee_id is None:
                job.grantee_id = self._logged_requester(request.grantee)
        return job

    def _gather(self, request: CheckRequest, job: Job) -> JobFacts:
        """The job's facts (requester and images already on ``job``)."""
        assert job.grantee_id is not None
        faces, job.shown = self._faces(job.images)
        prior = self._prior(request.prior)
        job.prior_sha = prior.registered_sha256 if prior else None
        prompt_subjects = self._prompt_subjects(request.prompt)
        involved = {f.subject_id for f in faces if f.subject_id} | set(prompt_subjects)
        if prior is not None:
            involved.add(prior.subject_id)
        return JobFacts(
            requester=job.grantee_id,
            purpose=request.purpose,
            now=format_time(self.registry.now()),
            input_faces=tuple(faces),
            prior=prior,
            prompt_subjects=tuple(prompt_subjects),
            grants=tuple(self._grants(involved, prior)),
            known_subjects=frozenset(involved),
            refuse_unknown_faces=self.refuse_unknown_faces,
            opted_out=self.registry.consent.opted_out_among(involved),
            images=len(job.images),
            pixels=max((i.width * i.height for i in job.images), default=0),
            steps=request.steps,
            limits=self.limits,
        )

    def _resume(self, held_id: str, job: Job) -> tuple[JobFacts, list[str], str]:
        """The job's facts under the approval of held decision ``held_id`` (ReviewError
        unless a signed review approved that very job, see
        :func:`~consentry.registry.reviews.approval_for`), the notes, the review id."""
        assert job.grantee_id is not None and job.facts is not None
        hold, review = approval_for(self.registry, held_id, job.grantee_id, job.purpose, job.inputs)
        facts, notes = approved_facts(job.facts, hold, review)
        return facts, notes, review.id

    def _refusal(self, exc: BaseException, requester: str, stage: str = "") -> Verdict:
        if isinstance(exc, LogIntegrityError):
            _log.error("job of %r refused%s: integrity error: %s", requester, stage, exc)
        return refusal(exc, stage)

    def _logged_requester(self, ref: str) -> str | None:
        """The requester's id from its row, only to log a refusal when the signed state
        cannot be read (a refusal never opens the gate, whatever the row says)."""
        try:
            return self.registry.get_grantee(ref).id
        except ConsentryError:
            return None

    # ------------------------------------------------------------------ finish
    def _finish(self, job: Job) -> tuple[Receipt, Decision | None]:
        """The one finish step: log the job's verdict (with the hashes of its outputs)
        and build its receipt from the verdict as logged. The memorization details go
        on the receipt; the signed outputs are the release's to add."""
        hashes = [hashlib.sha256(data).hexdigest() for data in job.outputs]
        with self.telemetry.timed("log_append"):
            decision, job.verdict = self._record(job, hashes)
        release.memorization_details(job, self.limits.max_copy_ssim)
        if decision is None:
            return job.receipt(None, None), None
        receipt = job.receipt(decision.id, decision.log_index)
        self.telemetry.decided(_event(job, decision, receipt))
        return receipt, decision

    def _record(self, job: Job, outputs: list[str]) -> tuple[Decision | None, Verdict]:
        """Log the verdict; an unknown requester or purpose cannot be logged.

        Returns the decision and the verdict as logged: an allow that a revocation or
        erasure committed since the facts were read overtook is logged, and returned,
        as a refusal (``record_decision`` re-checks inside its write transaction).
        """
        verdict = job.verdict
        if job.grantee_id is None:
            return None, verdict
        try:
            decision = record_decision(
                self.registry,
                job.grantee_id,
                job.purpose,
                verdict.allowed,
                list(verdict.reasons),
                list(verdict.grants_used),
                list(verdict.subjects),
                job.prior_sha,
                job.inputs,
                outputs,
                job.release_id if job.marks else None,
                job.marks or None,
                held=job.held if verdict.held else None,
                review=job.review,
            )
        except InputError:
            return None, verdict
        try:
            if self.checkpointer is None:  # per-decision mode; else on the cadence
                self.registry.checkpoint()
        except ConsentryError as exc:  # a truncated or rewritten log: nothing is allowed
            _log.error("decision %s logged, but no checkpoint: %s", decision.id, exc)
            reasons = (*(verdict.reasons if not verdict.allowed else ()), _no_checkpoint(exc))
            return decision, replace(verdict, allowed=False, held=False, reasons=reasons)
        if verdict.allowed and not decision.allowed:
            _log.warning("allow overtaken at release: %s", "; ".join(decision.reasons))
            verdict = replace(verdict, allowed=False, reasons=tuple(decision.reasons))
        return decision, verdict


def _event(job: Job, decision: Decision, receipt: Receipt) -> DecisionEvent:
    """What the watchers are told of a logged decision (ids only)."""
    outcome: Outcome = "held" if receipt.held else "allowed" if receipt.allowed else "refused"
    return DecisionEvent(
        decision.id,
        decision.log_index,
        outcome,
        job.purpose,
        decision.grantee_id,
        tuple(receipt.subjects),
        tuple(receipt.grants),
        time.perf_counter() - job.started,
    )


def _no_checkpoint(exc: Exception) -> str:
    return f"refused: {INTEGRITY_PREFIX}the log cannot be checkpointed: {exc}"


def run_job(gateway: Gateway, request: RunRequest, backend: Backend | None = None) -> Receipt:
    """``gateway.run(request, backend)``: the public free-function form."""
    return gateway.run(request, backend)
