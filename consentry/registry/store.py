"""The :class:`Registry` facade: subjects, grantees, grants, revocations, priors, keys.

The transparency log is its own object, ``registry.log``
(:class:`~consentry.registry.log.RegistryLog`): the one write path, the tree,
checkpoints, witness checks, proofs and verification. ``Registry`` keeps the
opening, the records and the keys, and delegates the everyday log reads
(``checkpoint``, ``inclusion_proof``, ``verify_log``...) to it in one line each.

Invariants
- Every state change is a signed envelope appended to the transparency log in
  the same database transaction as its row (``Database.write``), so after any
  crash both exist or neither does. Every row goes in through ``log.record``
  (its leaf kind, record id and statement derived from the row).
- Signing keys: the operator's current key signs every statement; a subject
  that holds a key co-signs every grant and revocation that concerns them.
  A key retired by rotation signs nothing more.
- A grant is *active* at time t iff ``not_before <= t < not_after`` and it has
  no revocation; this and the other input rules are in ``consentry.registry.rules``.
- Rollback: every Registry checks its log against its own witness state when it
  opens (``log.check_at_open``) and whenever it signs a checkpoint (the rules are
  in ``consentry.registry.log_witness``); ``RollbackError`` otherwise.
"""

from __future__ import annotations

import hmac
import json
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import bindparam
from sqlmodel import Session, col, select

from consentry.config import Home, resolve_db_url, resolve_home
from consentry.errors import (
    ConfigError,
    DuplicateError,
    InputError,
    LogIntegrityError,
    NotFoundError,
    OptedOutError,
    PriorOwnerError,
    SignatureError,
)
from consentry.fsutil import replace_durably
from consentry.registry.consent import ConsentState
from consentry.registry.db import Database
from consentry.registry.grant_policy import policy_of
from consentry.registry.log import InclusionProof, RegistryLog, leaf_bytes
from consentry.registry.models import (
    Grant,
    Grantee,
    LogEntry,
    OperatorKey,
    OptOut,
    Prior,
    Revocation,
    Subject,
)
from consentry.registry.raw_sql import RawStatement
from consentry.registry.refs import find_subject
from consentry.registry.rules import (
    GrantStatus,
    checked_grant_terms,
    grant_status,
    prior_digest,
    raise_unless_active,
    subject_cosigners,
)
from consentry.registry.sequencer import DecisionSequencer
from consentry.registry.signing import (
    SigningKey,
    canonical_json,
    public_key_from_hex,
    public_key_hex,
    sha256_hex,
)
from consentry.registry.statements import (
    Row,
    format_time,
    parse_time,
)
from consentry.registry.subject_keys import current_subject_key
from consentry.registry.vault import MasterKey
from consentry.registry.verify import LogReport
from consentry.registry.witness import WitnessStore

__all__ = ["GrantStatus", "InclusionProof", "Registry", "leaf_bytes", "parse_until"]

Clock = Callable[[], datetime]
_GRANTEE_BY_ID = select(*Grantee.__table__.columns).where(  # type: ignore[attr-defined]
    Grantee.__table__.c.id == bindparam("id")  # type: ignore[attr-defined]
)
_GRANTEE_COLUMNS = tuple(c.name for c in Grantee.__table__.columns)  # type: ignore[attr-defined]
_GRANTEE_ROW = RawStatement(
    f"SELECT {', '.join(_GRANTEE_COLUMNS)} FROM {Grantee.__tablename__} WHERE id = :id"
)


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(10)}"


class Registry:
    """A consent registry in one home folder, over SQLite or PostgreSQL."""

    def __init__(
        self,
        home: Home,
        db: Database,
        key: SigningKey,
        clock: Clock,
        witness: WitnessStore | None = None,
    ) -> None:
        self.home = home
        self.db = db
        self._clock = clock
        self._master: MasterKey | None = None
        self.witness = witness if witness is not None else WitnessStore.resolve()
        # the transparency log: the one write path, checkpoints, witness, proofs
        self.log = RegistryLog(home, db, key, clock, self.witness)
        self._consent: ConsentState | None = None
        # group commit of gateway decisions (``record_decision``); replace it to tune
        # ``max_batch`` / ``max_wait`` (``max_batch=1``: one transaction per decision)
        self.sequencer = DecisionSequencer(self)

    # ------------------------------------------------------------------ opening
    @classmethod
    def init(
        cls,
        home: Path | str | None = None,
        db_url: str | None = None,
        clock: Clock = _utcnow,
        witness_dir: Path | str | None = None,
    ) -> Registry:
        """Create a registry: operator key (0600), schema, genesis entry, checkpoint.

        The first checkpoint is recorded in the witness folder (``witness_dir``, else
        ``CONSENTRY_WITNESS_DIR``, else the per-user state folder).
        """
        root = Home(resolve_home(home))
        if root.exists() or root.operator_key.exists():
            raise DuplicateError(f"a registry already exists at {root.root}")
        url = db_url or resolve_db_url(root)
        root.root.mkdir(parents=True, exist_ok=True)
        db = Database.connect(url)
        db.create_schema()
        with db.read() as session:
            if session.exec(select(LogEntry).limit(1)).first() is not None:
                raise DuplicateError(f"database {url} already holds a registry log")
        key = SigningKey.generate()
        root.root.mkdir(parents=True, exist_ok=True)
        key.save(root.operator_key)
        key.save_public(root.operator_public)
        MasterKey.create(root.master_key)
        origin = f"consentry.registry/{key.key_id[:16]}"
        root.write_config({"db_url": url, "origin": origin})
        registry = cls(root, db, key, clock, WitnessStore.resolve(witness_dir))
        registry.log.origin = origin
        with db.write() as session:
            registry.log.record_genesis(session, format_time(clock()))
        registry.checkpoint()
        return registry

    @classmethod
    def open(
        cls,
        home: Path | str | None = None,
        db_url: str | None = None,
        clock: Clock = _utcnow,
        witness_dir: Path | str | None = None,
    ) -> Registry:
        """Open a registry and check it against this party's witness state.

        Raises ``RollbackError`` when the log does not extend the newest checkpoint
        the witness folder (``witness_dir``, else ``CONSENTRY_WITNESS_DIR``, else the
        per-user state folder) has seen of this log: the database was restored from
        an older copy, truncated, rewritten, or is another log.

        O(log n) stored hashes: no leaf is read but the genesis entry. What the open
        does not read is checked where it is used: the consent follower binds every
        entry it follows to the witnessed root (``registry.frontier``), an inclusion
        proof checks its leaf against the stored leaf hash, and ``log verify``
        recomputes every stored hash.
        """
        root = Home(resolve_home(home))
        config = root.read_config()
        db = Database.connect(db_url or resolve_db_url(root))
        try:
            db.create_schema()
            if not root.operator_key.exists():
                raise ConfigError(f"operator key missing: {root.operator_key}")
            key = SigningKey.load(root.operator_key)
            registry = cls(root, db, key, clock, WitnessStore.resolve(witness_dir))
            registry.log.origin = config.get("origin", "")
            registry.log.check_at_open()
        except BaseException:
            db.dispose()
            raise
        return registry

    def close(self) -> None:
        self.db.dispose()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def origin(self) -> str:
        """The log's checkpoint origin (``config.json``)."""
        return self.log.origin

    @property
    def key_id(self) -> str:
        """The current operator key id."""
        return self.log.key_id

    def now(self) -> datetime:
        return self._clock()

    @staticmethod
    def new_id(prefix: str) -> str:
        """A fresh random record id such as ``grt_3f2a...``."""
        return _new_id(prefix)

    @property
    def consent(self) -> ConsentState:
        """The consent facts followed from the signed log (``registry.consent``): what
        the gateway and ``verify`` trust; call ``refresh()`` to follow new entries."""
        if self._consent is None:
            self._consent = ConsentState(self)
        return self._consent

    @property
    def master_key(self) -> MasterKey:
        """The master key wrapping subject data keys (created on first use)."""
        if self._master is None:
            path = self.home.master_key
            self._master = MasterKey.load(path) if path.exists() else MasterKey.create(path)
        return self._master

    def _sign_and_append(
        self,
        row: Row,
        cosigners: Sequence[SigningKey] = (),
        before: Callable[[Session], None] | None = None,
    ) -> None:
        """``before(session)`` (a uniqueness check), then ``log.record``, in one write."""
        with self.db.write() as session:
            if before is not None:
                before(session)
            self.log.record(session, row, cosigners)

    # ------------------------------------------------------------------ subjects
    def add_subject(
        self,
        display_name: str,
        aliases: Iterable[str] = (),
        public_key: Ed25519PublicKey | None = None,
    ) -> Subject:
        """Register a subject; with ``public_key`` their grants need their signature."""
        name = display_name.strip()
        if not name:
            raise InputError("a subject needs a non-empty name")
        clean = sorted({a.strip() for a in aliases if a.strip()})
        row = Subject(
            id=_new_id("sub"),
            display_name=name,
            aliases_json=json.dumps(clean),
            public_key=public_key_hex(public_key) if public_key is not None else None,
            created_at=format_time(self._clock()),
            log_index=-1,
        )
        self._sign_and_append(row)
        return row

    def list_subjects(self) -> list[Subject]:
        with self.db.read() as session:
            return list(session.exec(select(Subject).order_by(col(Subject.log_index))))

    def get_subject(self, ref: str) -> Subject:
        """A subject by id, or by a display name or alias that names exactly one subject."""
        with self.db.read() as session:
            return self._find_subject(session, ref)

    @staticmethod
    def _find_subject(session: Session, ref: str) -> Subject:
        return find_subject(session, ref)  # id, else unique display name or alias

    # ------------------------------------------------------------------ grantees
    def add_grantee(
        self, name: str, public_key: Ed25519PublicKey | None = None
    ) -> tuple[Grantee, str]:
        """Register a grantee; returns it with its API key (shown once, stored hashed)."""
        clean = name.strip()
        if not clean:
            raise InputError("a grantee needs a non-empty name")
        api_key = "csk_" + secrets.token_urlsafe(32)
        row = Grantee(
            id=_new_id("gte"),
            name=clean,
            api_key_sha256=sha256_hex(api_key.encode()),
            public_key=public_key_hex(public_key) if public_key is not None else None,
            created_at=format_time(self._clock()),
            log_index=-1,
        )

        def unique(session: Session) -> None:
            if session.exec(select(Grantee).where(Grantee.name == clean)).first():
                raise DuplicateError(f"a grantee named {clean!r} already exists")

        self._sign_and_append(row, before=unique)
        return row, api_key

    def list_grantees(self) -> list[Grantee]:
        with self.db.read() as session:
            return list(session.exec(select(Grantee).order_by(col(Grantee.log_index))))

    def get_grantee(self, ref: str) -> Grantee:
        """A grantee by id or by its unique name."""
        with self.db.read() as session:
            return self._find_grantee(session, ref)

    @staticmethod
    def _find_grantee(session: Session, ref: str) -> Grantee:
        found = session.execute(_GRANTEE_BY_ID, {"id": ref}).first()
        if found is not None:
            return Grantee(**found._asdict())
        row = session.exec(select(Grantee).where(Grantee.name == ref)).first()
        if row is None:
            raise NotFoundError(f"no grantee {ref!r}", hint="see 'consentry grantee list'")
        return row

    def authenticate_grantee(self, api_key: str) -> Grantee:
        """The grantee holding ``api_key``, judged by the key hash in the grantee's
        signed log entry, never by the row's.

        A hash lookup of SHA-256(``api_key``) among the signed grantees as followed
        (:meth:`ConsentState.grantee_by_key_sha256`; it raises LogIntegrityError on a
        log that stopped verifying). The log is followed first only on a miss (a
        grantee added since the last follow); a hit needs none (a key rotation signed
        elsewhere is honoured once followed, see grantee_keys). The row must match
        its own signed entry (name, key hash; one Core read by id, every call): a
        missing or edited row is a LogIntegrityError, and a key whose hash only a row
        carries authenticates nobody (SignatureError).
        """
        digest = sha256_hex(api_key.encode())
        state = self.consent
        signed = state.grantee_by_key_sha256(digest)
        if signed is None:
            state.refresh()
            signed = state.grantee_by_key_sha256(digest)
        if signed is None or not hmac.compare_digest(signed.key_sha256 or "", digest):
            raise SignatureError("unknown API key")
        with self.db.read_one() as connection:  # on the cursor: once per HTTP request
            found = _GRANTEE_ROW.first(connection, {"id": signed.id})
        row = None if found is None else dict(zip(_GRANTEE_COLUMNS, found, strict=True))
        if row is None or (row["name"], row["api_key_sha256"]) != (
            signed.name,
            signed.api_key_sha256,
        ):
            raise LogIntegrityError(
                f"grantee {signed.id}: its row is missing or differs from the signed log"
            )
        return Grantee(**row)

    # ------------------------------------------------------------------ grants
    def grant(
        self,
        subject: str,
        grantee: str,
        purposes: Iterable[str],
        *,
        priors: Iterable[str] = (),
        not_before: datetime | None = None,
        not_after: datetime | None = None,
        constraints: dict[str, Any] | None = None,
        evidence_sha256: str | None = None,
        subject_key: SigningKey | None = None,
    ) -> Grant:
        """Record consent of ``subject`` for ``grantee`` to use their likeness."""
        start = not_before or self._clock()
        terms = checked_grant_terms(
            purposes, priors, evidence_sha256, start, not_after, constraints, policy_of(self.home)
        )
        with self.db.write() as session:
            subject_row = self._find_subject(session, subject)
            if session.exec(select(OptOut).where(OptOut.subject_id == subject_row.id)).first():
                raise OptedOutError(f"subject {subject_row.id} opted out: no grant can be made")
            grantee_row = self._find_grantee(session, grantee)
            current = current_subject_key(session, subject_row.id)
            cosigners = subject_cosigners(subject_row, subject_key, "grant", current)
            row = terms.row(  # the issuer is set again by log.record to the key that signs
                _new_id("grt"),
                subject_row.id,
                grantee_row.id,
                self.key_id,
                cosigners[0].key_id if cosigners else None,
                self._clock(),
            )
            self.log.record(session, row, cosigners)
        return row

    def get_grant(self, grant_id: str) -> Grant:
        with self.db.read() as session:
            row = session.get(Grant, grant_id)
        if row is None:
            raise NotFoundError(f"no grant {grant_id!r}", hint="see 'consentry grants'")
        return row

    def revoke(
        self, grant_id: str, reason: str, subject_key: SigningKey | None = None
    ) -> Revocation:
        """Revoke a grant. Revocation is final and wins every race with a job."""
        if not reason.strip():
            raise InputError("a revocation needs a reason")
        grant = self.get_grant(grant_id)
        subject = self.get_subject(grant.subject_id)
        with self.db.read() as session:
            current = current_subject_key(session, subject.id)
        cosigners = subject_cosigners(subject, subject_key, "revocation", current)
        row = Revocation(
            id=_new_id("rev"),
            grant_id=grant.id,
            reason=reason.strip(),
            issuer_key_id=self.key_id,
            subject_key_id=cosigners[0].key_id if cosigners else None,
            created_at=format_time(self._clock()),
            log_index=-1,
        )

        def not_revoked(session: Session) -> None:
            if session.exec(select(Revocation).where(Revocation.grant_id == grant.id)).first():
                raise DuplicateError(f"grant {grant.id} is already revoked")

        self._sign_and_append(row, cosigners, before=not_revoked)
        return row

    def revocation_of(self, grant_id: str) -> Revocation | None:
        with self.db.read() as session:
            return session.exec(select(Revocation).where(Revocation.grant_id == grant_id)).first()

    grant_status = staticmethod(grant_status)  # ``rules.grant_status``

    def check_grant(self, grant_id: str, at: datetime | None = None) -> Grant:
        """Return the grant if active at ``at`` (default now); else raise a GrantError."""
        grant = self.get_grant(grant_id)
        moment = at or self._clock()
        raise_unless_active(grant, grant_status(grant, self.revocation_of(grant.id), moment))
        return grant

    def list_grants(
        self,
        subject: str | None = None,
        grantee: str | None = None,
        active_only: bool = False,
        at: datetime | None = None,
    ) -> list[tuple[Grant, GrantStatus]]:
        """Grants in log order with their status at ``at`` (default now)."""
        moment = at or self._clock()
        query = select(Grant).order_by(col(Grant.log_index))
        if subject is not None:
            query = query.where(Grant.subject_id == self.get_subject(subject).id)
        if grantee is not None:
            query = query.where(Grant.grantee_id == self.get_grantee(grantee).id)
        with self.db.read() as session:
            grants = list(session.exec(query))
            revoked = {r.grant_id: r for r in session.exec(select(Revocation))}
        result = [(g, self.grant_status(g, revoked.get(g.id), moment)) for g in grants]
        return [(g, s) for g, s in result if not active_only or s == "active"]

    # ------------------------------------------------------------------ priors
    def add_prior(
        self,
        subject: str,
        kind: str,
        base_model_id: str,
        path: Path | None = None,
        *,
        sha256: str | None = None,
        size: int | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> Prior:
        """Register a personalised prior, bound to its bytes by SHA-256.

        ``details`` (how it was made: training configuration, base model hash,
        grant, photo hashes) is signed and logged with the row.

        Invariants
        - A SHA-256 belongs to one subject: registering bytes already registered
          as a prior of another subject raises :class:`PriorOwnerError` (checked
          inside the write transaction, under the writer lock, so two concurrent
          registrations cannot both pass). The same subject may register it again.
        - A weights prior given as a file (every kind but ``exemplars``, whose file
          is a JSON manifest) must be a well-formed safetensors file
          (:func:`~consentry.registry.safetensors_header.check_safetensors`), else
          :class:`~consentry.errors.PriorFileError`; nothing is logged.
        """
        sha256, size = prior_digest(kind, path, sha256, size)
        subject_row = self.get_subject(subject)
        digest = sha256

        def one_owner(session: Session) -> None:
            query = select(Prior).where(Prior.sha256 == digest).order_by(col(Prior.log_index))
            for other in session.exec(query):
                if other.subject_id != subject_row.id:
                    raise PriorOwnerError(
                        f"this file (SHA-256 {digest}) is already registered as prior "
                        f"{other.id} of another subject: a prior's bytes belong to one subject"
                    )

        row = Prior(
            id=_new_id("pri"),
            subject_id=subject_row.id,
            kind=kind,
            base_model_id=base_model_id,
            sha256=sha256,
            size=size,
            details_json=canonical_json(dict(details or {})).decode(),
            created_at=format_time(self._clock()),
            log_index=-1,
        )
        self._sign_and_append(row, before=one_owner)
        return row

    def list_priors(self, subject: str | None = None) -> list[Prior]:
        query = select(Prior).order_by(col(Prior.log_index))
        if subject is not None:
            query = query.where(Prior.subject_id == self.get_subject(subject).id)
        with self.db.read() as session:
            return list(session.exec(query))

    # ------------------------------------------------------------------ keys
    def operator_keys(self) -> list[OperatorKey]:
        with self.db.read() as session:
            return list(session.exec(select(OperatorKey).order_by(col(OperatorKey.log_index))))

    def rotate_key(self) -> OperatorKey:
        """Replace the operator key: a rotation entry signed by old and new keys.

        The old key is retired (it can sign nothing more); entries it signed
        before stay verifiable. The new private key replaces the old key file.
        """
        new_key = SigningKey.generate()
        with self.db.write() as session:
            new_row = self.log.record_rotation(session, new_key)
            staged = self.home.keys_dir / f".operator-{new_key.key_id[:16]}.key"
            new_key.save(staged)
            # the commit happens when this block exits; only then does the file move
        replace_durably(staged, self.home.operator_key)
        new_key.save_public(self.home.operator_public)
        self.log.use_key(new_key)
        self.checkpoint()
        return new_row

    def trusted_keys(self) -> dict[str, Ed25519PublicKey]:
        return {k.key_id: public_key_from_hex(k.public_key) for k in self.operator_keys()}

    # ------------------------------------------------------------------ log (delegated)
    # The everyday reads of ``registry.log`` (CLI, gateway, tests), one line each;
    # everything else (writes, witness state, leaf hashes) is reached as ``registry.log``.
    def checkpoint(self) -> str:
        """:meth:`RegistryLog.checkpoint`: sign, store and witness a checkpoint now."""
        return self.log.checkpoint()

    def check_not_rolled_back(self) -> None:
        """:meth:`RegistryLog.check_not_rolled_back`: the cheap pre-decision check."""
        self.log.check_not_rolled_back()

    def log_size(self) -> int:
        """:meth:`RegistryLog.log_size`."""
        return self.log.log_size()

    def entry(self, index: int) -> LogEntry:
        """:meth:`RegistryLog.entry`."""
        return self.log.entry(index)

    def latest_checkpoint(self) -> str:
        """:meth:`RegistryLog.latest_checkpoint`."""
        return self.log.latest_checkpoint()

    def inclusion_proof(self, index: int, checkpoint_note: str | None = None) -> InclusionProof:
        """:meth:`RegistryLog.inclusion_proof`."""
        return self.log.inclusion_proof(index, checkpoint_note)

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """:meth:`RegistryLog.consistency_proof`."""
        return self.log.consistency_proof(old_size, new_size)

    def verify_log(self) -> LogReport:
        """:meth:`RegistryLog.verify_log`."""
        return self.log.verify_log()


def parse_until(text: str | None) -> datetime | None:
    """``--until`` / ``--from`` values: ISO 8601, or None."""
    return None if text is None else parse_time(text)
