"""SQLModel tables of the registry.

Invariants
- Every row except log entries and checkpoints was written in the same
  transaction as the log leaf that records it; ``log_index`` points at it.
- Lists and objects are stored as RFC 8785 canonical JSON text, and times as
  ``YYYY-MM-DDTHH:MM:SSZ`` text, so a row rebuilds byte-for-byte the statement
  that was signed, on SQLite and PostgreSQL alike.
- The tables are a cache of the log: ``statement_of(row)`` must equal the
  signed statement in the row's leaf, or ``log verify`` reports tampering.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Column, LargeBinary, Text
from sqlmodel import Field, SQLModel

__all__ = [
    "BiometricBlob",
    "Calibration",
    "CheckpointRow",
    "Decision",
    "Enrollment",
    "Erasure",
    "Grant",
    "Grantee",
    "LogEntry",
    "OperatorKey",
    "OptOut",
    "Prior",
    "PriorKind",
    "Purpose",
    "Revocation",
    "Subject",
    "SubjectDataKey",
    "TreeHash",
]

Purpose = str  # one of PURPOSES in statements.py
PriorKind = str  # one of PRIOR_KINDS in statements.py


def _text() -> Any:
    return Field(sa_column=Column(Text, nullable=False))


class Subject(SQLModel, table=True):
    """A person whose likeness is registered."""

    __tablename__ = "subjects"

    id: str = Field(primary_key=True, max_length=40)
    display_name: str
    aliases_json: str = _text()
    public_key: str | None = Field(default=None, max_length=64)
    created_at: str = Field(max_length=20)
    log_index: int = Field(index=True)

    @property
    def aliases(self) -> list[str]:
        return list(json.loads(self.aliases_json))


class Grantee(SQLModel, table=True):
    """An organisation or person that may be granted the use of a likeness."""

    __tablename__ = "grantees"

    id: str = Field(primary_key=True, max_length=40)
    name: str = Field(unique=True, index=True)
    api_key_sha256: str = Field(max_length=64)
    public_key: str | None = Field(default=None, max_length=64)
    created_at: str = Field(max_length=20)
    log_index: int = Field(index=True)


class Grant(SQLModel, table=True):
    """Consent by a subject for a grantee to use their likeness."""

    __tablename__ = "grants"

    id: str = Field(primary_key=True, max_length=40)
    subject_id: str = Field(foreign_key="subjects.id", index=True, max_length=40)
    grantee_id: str = Field(foreign_key="grantees.id", index=True, max_length=40)
    purposes_json: str = _text()
    priors_json: str = _text()
    not_before: str = Field(max_length=20)
    not_after: str | None = Field(default=None, max_length=20)
    constraints_json: str = _text()
    evidence_sha256: str | None = Field(default=None, max_length=64)
    issuer_key_id: str = Field(max_length=64)
    subject_key_id: str | None = Field(default=None, max_length=64)
    # a statement prepared for detached signing (``consentry.registry.detached``) must
    # be signed and submitted before this time; None: signed where it was made
    sign_by: str | None = Field(default=None, max_length=20)
    # the registry's review date for this consent (``grant_policy``); None: none set
    review_by: str | None = Field(default=None, max_length=20)
    created_at: str = Field(max_length=20)
    log_index: int = Field(index=True)

    @property
    def purposes(self) -> list[str]:
        return list(json.loads(self.purposes_json))

    @property
    def priors(self) -> list[str]:
        return list(json.loads(self.priors_json))

    @property
    def constraints(self) -> dict[str, Any]:
        return dict(json.loads(self.constraints_json))


class Revocation(SQLModel, table=True):
    """The withdrawal of a grant. A grant has at most one revocation."""

    __tablename__ = "revocations"

    id: str = Field(primary_key=True, max_length=40)
    grant_id: str = Field(foreign_key="grants.id", unique=True, max_length=40)
    reason: str = _text()
    issuer_key_id: str = Field(max_length=64)
    subject_key_id: str | None = Field(default=None, max_length=64)
    sign_by: str | None = Field(default=None, max_length=20)  # as ``Grant.sign_by``
    created_at: str = Field(max_length=20)
    log_index: int = Field(index=True)


class Prior(SQLModel, table=True):
    """A personalised generative prior, bound to its file by SHA-256."""

    __tablename__ = "priors"

    id: str = Field(primary_key=True, max_length=40)
    subject_id: str = Field(foreign_key="subjects.id", index=True, max_length=40)
    kind: str = Field(max_length=32)
    base_model_id: str
    sha256: str = Field(index=True, max_length=64)
    size: int
    # Canonical JSON, signed with the row: how the prior was made. Trained priors:
    # {"training": config, "base_model_sha256", "grant", "photos": [sha256...]};
    # exemplars: {"photos": [sha256 of each aligned photo]}; "{}" when unknown.
    details_json: str = Field(default="{}", sa_column=Column(Text, nullable=False))
    created_at: str = Field(max_length=20)
    log_index: int = Field(index=True)

    @property
    def details(self) -> dict[str, Any]:
        return dict(json.loads(self.details_json))


class OperatorKey(SQLModel, table=True):
    """An operator signing key; ``retired_at_index`` is set by a rotation."""

    __tablename__ = "keys"

    key_id: str = Field(primary_key=True, max_length=64)
    public_key: str = Field(max_length=64)
    role: str = Field(default="operator", max_length=16)
    created_at: str = Field(max_length=20)
    log_index: int = Field(index=True)
    retired_at_index: int | None = Field(default=None)
    successor_key_id: str | None = Field(default=None, max_length=64)


class LogEntry(SQLModel, table=True):
    """One leaf of the transparency log: canonical JSON holding a signed envelope."""

    __tablename__ = "log_entries"

    idx: int = Field(primary_key=True)
    kind: str = Field(max_length=32)
    record_id: str = Field(max_length=64, index=True)
    leaf_json: str = _text()
    leaf_hash: str = Field(max_length=64)
    created_at: str = Field(max_length=20)


class CheckpointRow(SQLModel, table=True):
    """A signed checkpoint (signed-note text) of the log at ``tree_size``."""

    __tablename__ = "checkpoints"

    tree_size: int = Field(primary_key=True)
    root_hash: str = Field(max_length=64)
    note: str = _text()
    key_id: str = Field(max_length=64)
    created_at: str = Field(max_length=20)


class TreeHash(SQLModel, table=True):
    """One stored complete-subtree hash of the log's Merkle tree (``registry.tiles``).

    ``hash`` is RFC 9162 ``MTH`` of leaves ``[idx << level, (idx + 1) << level)``;
    level 0 holds the leaf hashes. Written in the same transaction as the leaf that
    completes the subtree, never updated: the C2SP tlog-tiles tile ``L/N`` is the
    hashes of level ``8 * L``, indexes ``256 * N`` onwards.
    """

    __tablename__ = "log_tree_hashes"
    __table_args__ = {"sqlite_with_rowid": False}  # the key is the row: ~half the bytes

    level: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    idx: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    hash: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class SubjectDataKey(SQLModel, table=True):
    """A subject's data key, wrapped by the master key. Deleted on erasure."""

    __tablename__ = "subject_data_keys"

    subject_id: str = Field(primary_key=True, foreign_key="subjects.id", max_length=40)
    wrapped_key: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at: str = Field(max_length=20)


class Enrollment(SQLModel, table=True):
    """One enrollment of a subject's photos by one engine; holds hashes only."""

    __tablename__ = "enrollments"

    id: str = Field(primary_key=True, max_length=40)
    subject_id: str = Field(foreign_key="subjects.id", index=True, max_length=40)
    engine: str = Field(max_length=32, index=True)
    engine_version: str
    model_hashes_json: str = _text()
    blobs_json: str = _text()  # [{"id", "kind", "photo_sha256", "sha256"}] in order
    created_at: str = Field(max_length=20)
    log_index: int = Field(index=True)

    @property
    def blobs(self) -> list[dict[str, Any]]:
        return list(json.loads(self.blobs_json))


class BiometricBlob(SQLModel, table=True):
    """An encrypted embedding or kept photo. Deleted on erasure.

    ``vector_id`` is the FAISS id of an embedding: enrollment log index * 1000
    + position, unique and stable across processes.
    """

    __tablename__ = "biometric_blobs"

    id: str = Field(primary_key=True, max_length=40)
    enrollment_id: str = Field(foreign_key="enrollments.id", index=True, max_length=40)
    subject_id: str = Field(index=True, max_length=40)
    kind: str = Field(max_length=16)  # "embedding" | "photo"
    engine: str = Field(max_length=32, index=True)
    vector_id: int = Field(index=True)
    photo_sha256: str = Field(max_length=64)
    ciphertext: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    sha256: str = Field(max_length=64)


class Erasure(SQLModel, table=True):
    """A subject's biometric data destroyed (crypto-erasure)."""

    __tablename__ = "erasures"

    id: str = Field(primary_key=True, max_length=40)
    subject_id: str = Field(foreign_key="subjects.id", unique=True, max_length=40)
    enrollments_json: str = _text()
    reason: str = _text()
    created_at: str = Field(max_length=20)
    log_index: int = Field(index=True)


class SubjectKeyChange(SQLModel, table=True):
    """A subject's key replaced (lost or compromised): from then on only the new key
    co-signs for them. ``authority`` is ``subject`` (signed by the old key and the
    new) or ``operator`` (the old key is lost: signed by the operator and the new
    key, with a ``reason``). ``old_key_id`` None: the subject held no key before."""

    __tablename__ = "subject_key_changes"

    id: str = Field(primary_key=True, max_length=40)
    subject_id: str = Field(foreign_key="subjects.id", index=True, max_length=40)
    old_key_id: str | None = Field(default=None, max_length=64)
    new_public_key: str = Field(max_length=64)
    new_key_id: str = Field(max_length=64)
    authority: str = Field(max_length=16)
    reason: str = _text()
    issuer_key_id: str = Field(max_length=64)
    sign_by: str = Field(max_length=20)
    created_at: str = Field(max_length=20)
    log_index: int = Field(index=True)


class ManifestStore(SQLModel, table=True):
    """The signed C2PA manifest store of one released output (``application/c2pa``),
    kept so the soft-binding resolver can hand it out after a platform stripped it.
    Not a log record: the manifest carries its own signature and names the logged
    decision; its id is ``<decision id>/<output index>``."""

    __tablename__ = "manifest_stores"

    id: str = Field(primary_key=True, max_length=48)
    decision_id: str = Field(index=True, max_length=40)
    output_index: int
    sha256: str = Field(max_length=64)
    data: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at: str = Field(max_length=20)


class GranteeKeyChange(SQLModel, table=True):
    """A grantee's API key replaced (``action`` ``rotate``: the new key's hash) or
    the grantee disabled (``disable``: no key authenticates it any more; final)."""

    __tablename__ = "grantee_key_changes"

    id: str = Field(primary_key=True, max_length=40)
    grantee_id: str = Field(foreign_key="grantees.id", index=True, max_length=40)
    action: str = Field(max_length=16)
    api_key_sha256: str | None = Field(default=None, max_length=64)
    reason: str = _text()
    created_at: str = Field(max_length=20)
    log_index: int = Field(index=True)


class OptOut(SQLModel, table=True):
    """A subject's opt-out: every job with their face, name or prior is refused,
    no grant can be made for them, and their kept photos are deleted; their
    embeddings stay (encrypted) so their face keeps being recognised and refused."""

    __tablename__ = "opt_outs"

    id: str = Field(primary_key=True, max_length=40)
    subject_id: str = Field(foreign_key="subjects.id", unique=True, max_length=40)
    photos_json: str = _text()  # ids of the kept-photo blobs deleted
    reason: str = _text()
    created_at: str = Field(max_length=20)
    log_index: int = Field(index=True)


class Calibration(SQLModel, table=True):
    """A match threshold for one engine; the newest one is in force.

    ``action`` is ``measure`` (measured on a labelled set), ``undo`` (restates
    the calibration in force before the last measured one: ``restores`` names it,
    or is None for the shipped default) or ``reset`` (the shipped default). A
    default restated by ``undo`` or ``reset`` has no measured rates (None) and no
    pairs; the log is append-only, so undoing is a new entry.
    """

    __tablename__ = "calibrations"

    id: str = Field(primary_key=True, max_length=40)
    engine: str = Field(max_length=32, index=True)
    engine_version: str
    threshold: float
    fmr_target: float | None = None
    fmr: float | None = None
    fnmr: float | None = None
    eer: float | None = None
    genuine_pairs: int
    impostor_pairs: int
    dataset_sha256: str = Field(max_length=64)
    action: str = Field(default="measure", max_length=16)
    restores: str | None = Field(default=None, max_length=40)
    # 1:N operating point (``consentry calibrate --fpir``): faces scoring in
    # [review_threshold, threshold) are held for a person; None: no review band.
    review_threshold: float | None = None
    fpir_target: float | None = None  # expected FPIR budget the thresholds were chosen for
    gallery_size: int | None = None  # registered subjects N it was chosen at
    max_gallery: int | None = None  # largest N whose expected FPIR stays in budget
    created_at: str = Field(max_length=20)
    log_index: int = Field(index=True)


class Decision(SQLModel, table=True):
    """A gateway decision (allow or refuse) and what it was about: ids and hashes only.

    ``grants_json`` and ``subjects_json`` name records earlier in the log;
    ``inputs_json`` and ``outputs_json`` are SHA-256 hex lists of the images read
    and released; ``reasons_json`` lists why (every reason of a refusal).
    """

    __tablename__ = "decisions"

    id: str = Field(primary_key=True, max_length=40)
    grantee_id: str = Field(foreign_key="grantees.id", index=True, max_length=40)
    purpose: str = Field(max_length=32)
    allowed: bool
    reasons_json: str = _text()
    grants_json: str = _text()
    subjects_json: str = _text()
    prior_sha256: str | None = Field(default=None, max_length=64)
    inputs_json: str = _text()
    outputs_json: str = _text()
    created_at: str = Field(max_length=20)
    log_index: int = Field(index=True)
    # the release's marks (issue 15): the 64-bit id its outputs' watermark carries
    # and, per output, its fingerprints; None on refusals and rows of older releases
    release_id: str | None = Field(default=None, index=True, max_length=16)
    marks_json: str | None = Field(default=None, sa_column=Column(Text, nullable=True))

    @property
    def marks(self) -> list[dict[str, Any]]:
        """Each output's marks (watermark algorithm or None, fingerprints); [] if none."""
        return list(json.loads(self.marks_json)) if self.marks_json else []

    # a hold (issue 14): canonical JSON of what was held (faces, band); None otherwise
    held_json: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    review_id: str | None = Field(default=None, max_length=40)  # the review it resumed

    @property
    def reasons(self) -> list[str]:
        return list(json.loads(self.reasons_json))

    @property
    def grants(self) -> list[str]:
        return list(json.loads(self.grants_json))

    @property
    def subjects(self) -> list[str]:
        return list(json.loads(self.subjects_json))

    @property
    def inputs(self) -> list[str]:
        return list(json.loads(self.inputs_json))

    @property
    def outputs(self) -> list[str]:
        return list(json.loads(self.outputs_json))


class Review(SQLModel, table=True):
    """A person's verdict on a held decision (issue 14), signed by the operator key.

    ``verdict`` is ``approve`` (the reviewer judged the held face is not the
    candidate subject) or ``reject`` (it is, or cannot be told: the job stays
    refused). One review per held decision; the signed log is the truth, the row
    a cache (see :mod:`consentry.registry.reviews`).
    """

    __tablename__ = "reviews"

    id: str = Field(primary_key=True, max_length=40)
    decision_id: str = Field(index=True, max_length=40)
    verdict: str = Field(max_length=16)
    reviewer: str = Field(max_length=200)
    note: str = _text()
    created_at: str = Field(max_length=20)
    log_index: int = Field(index=True)
