"""The :class:`Registry` facade: subjects, grantees, grants, revocations, priors, keys.

Invariants
- Every state change is a signed envelope appended to the transparency log in
  the same database transaction as its row (``Database.write``), so after any
  crash both exist or neither does.
- Signing keys: the operator's current key signs every statement; a subject
  that holds a key co-signs every grant and revocation that concerns them.
  A key retired by rotation signs nothing more.
- A grant is *active* at time t iff ``not_before <= t < not_after`` (no upper
  bound when ``not_after`` is null) and it has no revocation.
- Rollback: every Registry checks, when it opens and whenever it signs a
  checkpoint, that the log extends the newest checkpoint its *own* witness state
  (``consentry.registry.witness``, outside the home) has seen, with an RFC 9162
  consistency proof, and advances that state; a log that does not (smaller, or
  another history) raises ``RollbackError``. ``check_not_rolled_back`` is the
  cheap check the gateway runs before every decision.
"""

from __future__ import annotations

import hmac
import json
import secrets
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import bindparam, func, insert
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from consentry.config import Home, resolve_db_url, resolve_home
from consentry.errors import (
    AmbiguousNameError,
    ConfigError,
    ConsentryError,
    DuplicateError,
    GrantExpiredError,
    GrantNotYetValidError,
    GrantRevokedError,
    InputError,
    LogIntegrityError,
    NotFoundError,
    OptedOutError,
    PriorOwnerError,
    RetiredKeyError,
    RollbackError,
    SignatureError,
)
from consentry.fsutil import atomic_write, replace_durably
from consentry.hashing import SHA256_HEX as _SHA256
from consentry.hashing import hash_file
from consentry.registry import checkpoint as cp
from consentry.registry import merkle, tiles
from consentry.registry.db import Database
from consentry.registry.models import (
    CheckpointRow,
    Grant,
    Grantee,
    LogEntry,
    OperatorKey,
    OptOut,
    Prior,
    Revocation,
    Subject,
)
from consentry.registry.sequencer import DecisionSequencer
from consentry.registry.signing import (
    Envelope,
    SigningKey,
    canonical_json,
    checkpoint_key_name,
    key_id_of,
    public_key_from_hex,
    public_key_hex,
    sha256_hex,
)
from consentry.registry.statements import (
    PRIOR_KINDS,
    PURPOSES,
    Row,
    format_time,
    parse_time,
    rotation_statement,
    statement_of,
)
from consentry.registry.vault import MasterKey
from consentry.registry.verify import LogReport, verify_log
from consentry.registry.witness import WitnessStore, check_extends

if TYPE_CHECKING:
    from consentry.registry.consent import ConsentState

__all__ = ["GrantStatus", "InclusionProof", "Registry", "leaf_bytes", "parse_until"]

GrantStatus = Literal["active", "expired", "not-yet-valid", "revoked"]
Clock = Callable[[], datetime]


_MAX_INDEX = select(func.max(LogEntry.idx))
_LEAF_HASH_AT = select(LogEntry.leaf_hash).where(col(LogEntry.idx) == bindparam("idx"))
_SUBJECT_BY_ID = select(*Subject.__table__.columns).where(  # type: ignore[attr-defined]
    Subject.__table__.c.id == bindparam("id")  # type: ignore[attr-defined]
)
_GRANTEE_BY_ID = select(*Grantee.__table__.columns).where(  # type: ignore[attr-defined]
    Grantee.__table__.c.id == bindparam("id")  # type: ignore[attr-defined]
)
_KEY_RETIRED = select(OperatorKey.retired_at_index).where(OperatorKey.key_id == bindparam("key_id"))
_INSERTS: dict[type[Any], Any] = {}


def _insert_for(model: type[Any]) -> Any:
    """A cached Core INSERT for ``model``'s table (built once per process)."""
    statement = _INSERTS.get(model)
    if statement is None:
        statement = _INSERTS[model] = insert(model.__table__)
    return statement


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(10)}"


def leaf_bytes(kind: str, record_id: str, envelope: Envelope) -> bytes:
    """The canonical JSON of one log leaf (what RFC 9162 ``leaf_hash`` hashes)."""
    return canonical_json(
        {
            "type": "consentry.log-leaf",
            "version": 1,
            "kind": kind,
            "id": record_id,
            "envelope": envelope.to_json(),
        }
    )


@dataclass(frozen=True)
class InclusionProof:
    """Everything an offline verifier needs to check one entry against a checkpoint."""

    index: int
    tree_size: int
    leaf_hash: bytes
    hashes: list[bytes]
    checkpoint: str
    leaf: str

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "tree_size": self.tree_size,
            "leaf_hash": self.leaf_hash.hex(),
            "hashes": [h.hex() for h in self.hashes],
            "checkpoint": self.checkpoint,
            "leaf": self.leaf,
        }


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
        self._key = key
        self._clock = clock
        self._master: MasterKey | None = None
        self.witness = witness if witness is not None else WitnessStore.resolve()
        # (size, leaf hash hex at size - 1) of the tree last proved to extend the witness
        self._witnessed_tail: tuple[int, str] | None = None
        # (size, root) of that witnessed checkpoint: what the consent follower binds to
        self._witnessed_root: tuple[int, bytes] | None = None
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
        registry._origin = origin
        now = format_time(clock())
        row = OperatorKey(key_id=key.key_id, public_key=key.public_hex, created_at=now, log_index=0)
        with db.write() as session:
            registry.append(
                session, row, "key", key.key_id, Envelope.sign(statement_of(row), [key])
            )
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
            registry._origin = config.get("origin", "")
            registry._sync_stored_hashes()
            registry.witness_check()
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

    _origin: str = ""

    @property
    def origin(self) -> str:
        if not self._origin:
            self._origin = self.home.read_config().get("origin", "")
        return self._origin

    @property
    def key_id(self) -> str:
        """The current operator key id."""
        return self._key.key_id

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
            from consentry.registry.consent import ConsentState

            self._consent = ConsentState(self)
        return self._consent

    @property
    def master_key(self) -> MasterKey:
        """The master key wrapping subject data keys (created on first use)."""
        if self._master is None:
            path = self.home.master_key
            self._master = MasterKey.load(path) if path.exists() else MasterKey.create(path)
        return self._master

    # ------------------------------------------------------------------ writing
    def signing_key(self, session: Session) -> SigningKey:
        """The operator key, after checking (in ``session``) that it is not retired."""
        found = session.execute(_KEY_RETIRED, {"key_id": self._key.key_id}).first()
        if found is None:
            raise SignatureError(f"operator key {self._key.key_id[:16]} is not in this registry")
        if found[0] is not None:
            raise RetiredKeyError(
                f"operator key {self._key.key_id[:16]} was retired at log index "
                f"{found[0]} and can no longer sign"
            )
        return self._key

    def next_index(self, session: Session) -> int:
        """The index the next leaf appended in ``session`` gets: ``max(idx) + 1``.

        The caller holds the writer lock (``Database.write``), so no other writer can
        take it before the caller's commit. Stored hashes an older release did not
        write are caught up first (a truncated log is refused: ``tiles.sync``).
        """
        with session.no_autoflush:
            last = session.execute(_MAX_INDEX).scalar()
            index = 0 if last is None else int(last) + 1
            if tiles.stored_size(session) != index:
                tiles.sync(session)  # leaves an older release wrote; refuses a truncated log
        return index

    def append(
        self,
        session: Session,
        row: Row | None,
        kind: str,
        record_id: str,
        envelope: Envelope,
    ) -> int:
        """Append one leaf (and insert its row) inside the caller's write transaction.

        The caller holds the writer lock (``Database.write``), so ``max(idx) + 1``
        is the next free index. Rows go in through Core inserts: no ORM flush.
        """
        return self.append_many(session, [(row, kind, record_id, envelope)])[0]

    def append_many(
        self,
        session: Session,
        items: Sequence[tuple[Row | None, str, str, Envelope]],
        start: int | None = None,
    ) -> list[int]:
        """Append ``(row, kind, record_id, envelope)`` leaves at consecutive indexes,
        in order, inside the caller's write transaction; returns their indexes.

        Each row's ``log_index`` is set to its leaf's index. Rows of one table, the
        log entries and the stored tree hashes each go in with one executemany
        (``tiles.integrate`` once for the batch, ``tiles.append_leaf`` for one leaf).
        ``start``: the caller's :meth:`next_index`, read in this same transaction
        (the writer lock held since, so it is still the next index); read here when
        not given.
        """
        if not items:
            return []
        if start is None:
            start = self.next_index(session)
        created = format_time(self._clock())
        tables: dict[type[Any], list[dict[str, Any]]] = {}
        entries: list[dict[str, Any]] = []
        digests: list[bytes] = []
        for index, (row, kind, record_id, envelope) in enumerate(items, start):
            data = leaf_bytes(kind, record_id, envelope)
            digest = merkle.leaf_hash(data)
            if row is not None:
                row.log_index = index
                tables.setdefault(type(row), []).append(row.model_dump())
            entries.append(
                {
                    "idx": index,
                    "kind": kind,
                    "record_id": record_id,
                    "leaf_json": data.decode(),
                    "leaf_hash": digest.hex(),
                    "created_at": created,
                }
            )
            digests.append(digest)
        try:
            for model, rows in tables.items():
                session.execute(_insert_for(model), rows)
            session.execute(_insert_for(LogEntry), entries)
            if len(digests) == 1:
                tiles.append_leaf(session, start, digests[0])
            else:
                tiles.integrate(session, start, digests)
        except IntegrityError as exc:
            _, kind, record_id, _ = items[0]
            what = f"{kind} {record_id}" if len(items) == 1 else f"one of {len(items)} records"
            raise DuplicateError(f"{what} conflicts with an existing record") from exc
        return list(range(start, start + len(items)))

    def _sign_and_append(
        self,
        row: Subject | Grantee | Grant | Revocation | Prior,
        kind: str,
        extra_keys: Sequence[SigningKey] = (),
        before: Callable[[Session], None] | None = None,
    ) -> None:
        with self.db.write() as session:
            if before is not None:
                before(session)
            key = self.signing_key(session)
            if isinstance(row, (Grant, Revocation)):
                row.issuer_key_id = key.key_id
            envelope = Envelope.sign(statement_of(row), [key, *extra_keys])
            self.append(session, row, kind, row.id, envelope)

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
        self._sign_and_append(row, "subject")
        return row

    def list_subjects(self) -> list[Subject]:
        with self.db.read() as session:
            return list(session.exec(select(Subject).order_by(col(Subject.log_index))))

    def get_subject(self, ref: str) -> Subject:
        """A subject by id, or by a display name that matches exactly one subject."""
        with self.db.read() as session:
            return self._find_subject(session, ref)

    @staticmethod
    def _find_subject(session: Session, ref: str) -> Subject:
        found = session.execute(_SUBJECT_BY_ID, {"id": ref}).first()
        if found is not None:
            return Subject(**found._asdict())
        matches = list(session.exec(select(Subject).where(Subject.display_name == ref)))
        if not matches:
            raise NotFoundError(f"no subject {ref!r}: see 'consentry subject list'")
        if len(matches) > 1:
            raise AmbiguousNameError(f"{len(matches)} subjects are named {ref!r}: use the id")
        return matches[0]

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

        self._sign_and_append(row, "grantee", before=unique)
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
            raise NotFoundError(f"no grantee {ref!r}: see 'consentry grantee list'")
        return row

    def authenticate_grantee(self, api_key: str) -> Grantee:
        """The grantee holding ``api_key``, judged by the key hash in the grantee's
        signed log entry, never by the row's.

        A hash lookup of SHA-256(``api_key``) among the signed grantees as followed
        (:meth:`ConsentState.grantee_by_key_sha256`; it raises LogIntegrityError on a
        log that stopped verifying). The log is followed first only on a miss (a
        grantee added since the last follow): a signed grantee and its key hash never
        change, so a hit needs no refresh. The row must still match the signed entry
        (name and key hash, one Core read by id, every call): a missing or edited row
        is a LogIntegrityError (fail closed), and a key whose hash only a row
        carries authenticates nobody (SignatureError).
        """
        digest = sha256_hex(api_key.encode())
        state = self.consent
        signed = state.grantee_by_key_sha256(digest)
        if signed is None:
            state.refresh()
            signed = state.grantee_by_key_sha256(digest)
        if signed is None or not hmac.compare_digest(signed.api_key_sha256, digest):
            raise SignatureError("unknown API key")
        with self.db.reader.connect() as connection:
            found = connection.execute(_GRANTEE_BY_ID, {"id": signed.id}).first()
        if found is None or (found.name, found.api_key_sha256) != (
            signed.name,
            signed.api_key_sha256,
        ):
            raise LogIntegrityError(
                f"grantee {signed.id}: its row is missing or differs from the signed log"
            )
        return Grantee(**found._asdict())

    # ------------------------------------------------------------------ grants
    def _subject_cosigner(
        self, subject: Subject, subject_key: SigningKey | None, action: str
    ) -> list[SigningKey]:
        if subject.public_key is None:
            if subject_key is not None:
                raise InputError(f"subject {subject.id} holds no key; drop --subject-key")
            return []
        if subject_key is None:
            raise SignatureError(
                f"subject {subject.id} holds a key: the {action} needs their signature "
                "(--subject-key FILE)"
            )
        if subject_key.public_hex != subject.public_key:
            raise SignatureError(
                f"--subject-key is not the key of subject {subject.id} "
                f"(expected key {key_id_of(public_key_from_hex(subject.public_key))[:16]})"
            )
        return [subject_key]

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
        wanted = sorted(set(purposes))
        if not wanted:
            raise InputError("a grant needs at least one purpose")
        bad = [p for p in wanted if p not in PURPOSES]
        if bad:
            raise InputError(f"unknown purpose {bad[0]!r}: choose from {', '.join(PURPOSES)}")
        prior_list = sorted({p.lower() for p in priors})
        for value in [*prior_list, *([evidence_sha256] if evidence_sha256 else [])]:
            if not _SHA256.match(value):
                raise InputError(f"not a SHA-256 in hex: {value!r}")
        start = not_before or self._clock()
        if not_after is not None and not_after <= start:
            raise InputError("the grant would end before it starts (--until before --from)")
        with self.db.write() as session:
            subject_row = self._find_subject(session, subject)
            if session.exec(select(OptOut).where(OptOut.subject_id == subject_row.id)).first():
                raise OptedOutError(f"subject {subject_row.id} opted out: no grant can be made")
            grantee_row = self._find_grantee(session, grantee)
            cosigners = self._subject_cosigner(subject_row, subject_key, "grant")
            key = self.signing_key(session)
            row = Grant(
                id=_new_id("grt"),
                subject_id=subject_row.id,
                grantee_id=grantee_row.id,
                purposes_json=json.dumps(wanted),
                priors_json=json.dumps(prior_list),
                not_before=format_time(start),
                not_after=format_time(not_after) if not_after is not None else None,
                constraints_json=canonical_json(constraints or {}).decode(),
                evidence_sha256=evidence_sha256,
                issuer_key_id=key.key_id,
                subject_key_id=cosigners[0].key_id if cosigners else None,
                created_at=format_time(self._clock()),
                log_index=-1,
            )
            envelope = Envelope.sign(statement_of(row), [key, *cosigners])
            self.append(session, row, "grant", row.id, envelope)
        return row

    def get_grant(self, grant_id: str) -> Grant:
        with self.db.read() as session:
            row = session.get(Grant, grant_id)
        if row is None:
            raise NotFoundError(f"no grant {grant_id!r}: see 'consentry grants'")
        return row

    def revoke(
        self, grant_id: str, reason: str, subject_key: SigningKey | None = None
    ) -> Revocation:
        """Revoke a grant. Revocation is final and wins every race with a job."""
        if not reason.strip():
            raise InputError("a revocation needs a reason")
        grant = self.get_grant(grant_id)
        subject = self.get_subject(grant.subject_id)
        cosigners = self._subject_cosigner(subject, subject_key, "revocation")
        row = Revocation(
            id=_new_id("rev"),
            grant_id=grant.id,
            reason=reason.strip(),
            issuer_key_id=self._key.key_id,
            subject_key_id=cosigners[0].key_id if cosigners else None,
            created_at=format_time(self._clock()),
            log_index=-1,
        )

        def not_revoked(session: Session) -> None:
            if session.exec(select(Revocation).where(Revocation.grant_id == grant.id)).first():
                raise DuplicateError(f"grant {grant.id} is already revoked")

        self._sign_and_append(row, "revocation", cosigners, before=not_revoked)
        return row

    def revocation_of(self, grant_id: str) -> Revocation | None:
        with self.db.read() as session:
            return session.exec(select(Revocation).where(Revocation.grant_id == grant_id)).first()

    @staticmethod
    def grant_status(grant: Grant, revocation: Revocation | None, at: datetime) -> GrantStatus:
        if revocation is not None:
            return "revoked"
        moment = format_time(at)
        if moment < grant.not_before:
            return "not-yet-valid"
        if grant.not_after is not None and moment >= grant.not_after:
            return "expired"
        return "active"

    def check_grant(self, grant_id: str, at: datetime | None = None) -> Grant:
        """Return the grant if active at ``at`` (default now); else raise a GrantError."""
        grant = self.get_grant(grant_id)
        moment = at or self._clock()
        status = self.grant_status(grant, self.revocation_of(grant.id), moment)
        if status == "revoked":
            raise GrantRevokedError(f"grant {grant.id} was revoked")
        if status == "expired":
            raise GrantExpiredError(f"grant {grant.id} expired at {grant.not_after}")
        if status == "not-yet-valid":
            raise GrantNotYetValidError(f"grant {grant.id} is valid from {grant.not_before}")
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
        if kind not in PRIOR_KINDS:
            raise InputError(f"unknown prior kind {kind!r}: choose from {', '.join(PRIOR_KINDS)}")
        if path is not None:
            if kind != "exemplars":
                from consentry.registry.safetensors_header import check_safetensors

                check_safetensors(path)
            sha256, size = _hash_file(path)
        if sha256 is None or size is None or not _SHA256.match(sha256):
            raise InputError("a prior needs a file, or its SHA-256 and size")
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
        self._sign_and_append(row, "prior", before=one_owner)
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
            old_key = self.signing_key(session)
            old_row = session.get(OperatorKey, old_key.key_id)
            assert old_row is not None
            new_row = OperatorKey(
                key_id=new_key.key_id,
                public_key=new_key.public_hex,
                created_at=format_time(self._clock()),
                log_index=-1,
            )
            envelope = Envelope.sign(rotation_statement(old_row, new_row), [old_key, new_key])
            index = self.append(session, new_row, "key-rotation", new_key.key_id, envelope)
            old_row.retired_at_index = index
            old_row.successor_key_id = new_key.key_id
            session.add(old_row)
            staged = self.home.keys_dir / f".operator-{new_key.key_id[:16]}.key"
            new_key.save(staged)
            # the commit happens when this block exits; only then does the file move
        replace_durably(staged, self.home.operator_key)
        new_key.save_public(self.home.operator_public)
        self._key = new_key
        self.checkpoint()
        return new_row

    def trusted_keys(self) -> dict[str, Ed25519PublicKey]:
        return {k.key_id: public_key_from_hex(k.public_key) for k in self.operator_keys()}

    # ------------------------------------------------------------------ log
    def log_size(self) -> int:
        with self.db.read() as session:
            last = session.exec(select(func.max(LogEntry.idx))).one()
        return 0 if last is None else int(last) + 1

    def leaf_hashes(self, size: int | None = None) -> list[bytes]:
        query = select(LogEntry.leaf_hash).order_by(col(LogEntry.idx))
        if size is not None:
            query = query.where(col(LogEntry.idx) < size)
        with self.db.read() as session:
            return [bytes.fromhex(h) for h in session.exec(query)]

    def prefix_root(self, size: int) -> bytes | None:
        """RFC 9162 root of the first ``size`` entries, from O(log n) stored hashes;
        None when the log holds fewer entries."""
        with self._tree() as tree:
            if not 0 <= size <= len(tree):
                return None
            return tree.root_at(size)

    def entry(self, index: int) -> LogEntry:
        with self.db.read() as session:
            row = session.get(LogEntry, index)
        if row is None:
            raise NotFoundError(f"no log entry {index}")
        return row

    @contextmanager
    def _tree(self) -> Iterator[tiles.StoredTree]:
        """The whole log's tree from stored hashes, in one read session (O(log n)
        rows per root or proof). Leaves without stored hashes (a home an older
        release wrote) get them first, in a write transaction. Stored hashes past
        the log's end (entries deleted) are ignored here: the witness proofs then
        see the smaller log and refuse it."""
        with self.db.read() as session:
            size = tiles.log_size(session)
            if tiles.stored_size(session) >= size:
                yield tiles.StoredTree(session, size)
                return
        with self.db.write() as session:
            yield tiles.StoredTree(session, tiles.sync(session))

    def _sync_stored_hashes(self) -> None:
        """At open: bring the stored hashes up to the log (upgrade in place, once).
        Two O(1) queries when they are already there. Leaves are not compared with
        their stored hashes here (that was O(n)): the follower's binding refuses a
        leaf rewritten under unchanged stored hashes at the first follow of it."""
        with self.db.read() as session:
            behind = tiles.stored_size(session) < tiles.log_size(session)
        if behind:
            with self.db.write() as session:
                tiles.sync(session)

    @property
    def witnessed_root(self) -> tuple[int, bytes] | None:
        """``(tree size, root)`` of the newest checkpoint this Registry proved its
        witness state holds and the log extends (at open, and at each checkpoint);
        None before any (a party trusting the log on first use)."""
        return self._witnessed_root

    def checkpoint(self) -> str:
        """Sign a checkpoint of the whole log now; store it and the home's witness copy.

        Refuses (``RollbackError``) when the log no longer extends the witness
        checkpoint this home saw last, or a stored checkpoint of the same size has
        another root: a truncated or rewritten log is never re-signed. The root
        and the witness proofs come from stored hashes (O(log n) rows).
        """
        with self.db.write() as session:
            key = self.signing_key(session)
            size = tiles.sync(session)
            tree = tiles.StoredTree(session, size)
            self._check_witness(session, tree)
            self._check_extends_witness(tree)
            root = tree.root
            existing = session.get(CheckpointRow, size)
            if existing is not None:
                if existing.root_hash != root.hex():
                    raise RollbackError(
                        f"a stored checkpoint of size {size} has another root: "
                        "the log was rewritten; run 'consentry log verify'"
                    )
                note = existing.note
            else:
                checkpoint = cp.Checkpoint(self.origin, size, root, self._clock())
                note = cp.sign_checkpoint(
                    checkpoint, checkpoint_key_name(key.key_id), key.private_key
                )
                session.add(
                    CheckpointRow(
                        tree_size=size,
                        root_hash=root.hex(),
                        note=note,
                        key_id=key.key_id,
                        created_at=format_time(self._clock()),
                    )
                )
        atomic_write(self.home.witness_checkpoint, note, 0o644)
        with self._tree() as tree:
            self._advance_witness(tree, note)
        return note

    # ------------------------------------------------------------------ witness
    def witness_check(self) -> None:
        """Prove that the whole log extends this party's witness state, then advance
        the state to the newest stored checkpoint that verifies against the log.

        Roots and the consistency proof come from stored hashes: O(log n) rows.
        Also checks that the log is the one ``config.json`` names (its origin is
        bound to the genesis key). Raises ``RollbackError``.
        """
        with self._tree() as tree:
            session = tree.session
            genesis = session.get(LogEntry, 0)
            newest = session.exec(
                select(CheckpointRow).order_by(col(CheckpointRow.tree_size).desc())
            ).first()
            keys = {
                checkpoint_key_name(k.key_id): public_key_from_hex(k.public_key)
                for k in session.exec(select(OperatorKey))
            }
            if genesis is not None:
                self._check_genesis(genesis, tree.leaf(0))
            self._check_extends_witness(tree)
            if newest is not None:
                candidate = self._verified_note(newest.note, keys, tree)
                if candidate is not None:
                    self._advance_witness(tree, candidate)

    def check_not_rolled_back(self) -> None:
        """The cheap check before each decision (O(1) queries, no tree).

        The log still holds, unchanged, the last leaf of the tree this Registry
        proved to extend its witness, and the witness state has not moved past it
        (another process saw more: then the full :meth:`witness_check` runs). A
        rollback under a running gateway therefore refuses the next job; a
        rewrite that keeps that leaf is caught by the full proof at the next
        checkpoint (before anything is released) and at every open.
        """
        seen = self.witness.latest_unchanged(self.origin)
        tail = self._witnessed_tail
        if tail is None or (seen is not None and seen.checkpoint.tree_size > tail[0]):
            self.witness_check()
            return
        size, leaf = tail
        with self.db.reader.connect() as connection:  # one Core query, no ORM session
            found = connection.execute(_LEAF_HASH_AT, {"idx": size - 1}).first()
        if found is None or found[0] != leaf:
            raise RollbackError(
                f"rollback: the log no longer holds entry {size - 1} as witnessed "
                f"(witness {self.witness.folder}): the database was restored from an older "
                "copy or rewritten; refusing every job"
            )

    def _check_genesis(self, genesis: LogEntry, genesis_hash: bytes) -> None:
        """The log's first entry is the key its origin is named after."""
        try:
            leaf = json.loads(genesis.leaf_json)
        except ValueError:
            leaf = {}
        key_id = str(leaf.get("id", "")) if isinstance(leaf, dict) else ""
        if (
            merkle.leaf_hash(genesis.leaf_json.encode()) != genesis_hash
            or not isinstance(leaf, dict)
            or leaf.get("kind") != "key"
            or self.origin != f"consentry.registry/{key_id[:16]}"
        ):
            raise RollbackError(
                f"the database holds another log than {self.origin!r} (its genesis key is "
                f"{key_id[:16] or 'missing'}): refusing it"
            )

    def _verified_note(
        self, note: str, keys: Mapping[str, Ed25519PublicKey], tree: tiles.StoredTree
    ) -> str | None:
        """``note`` if an operator key signed it for this origin and its root is the
        log's prefix root; else None (``log verify`` reports why)."""
        try:
            _, signatures = cp.parse_checkpoint(note)
            for signature in signatures:
                public = keys.get(signature.key_name)
                if public is None:
                    continue
                checkpoint = cp.verify_checkpoint(note, signature.key_name, public)
                if (
                    checkpoint.origin == self.origin
                    and checkpoint.tree_size <= len(tree)
                    and tree.root_at(checkpoint.tree_size) == checkpoint.root_hash
                ):
                    return note
                return None
        except ConsentryError:
            return None
        return None

    def _check_extends_witness(self, tree: tiles.StoredTree) -> None:
        """The log extends the witness state (consistency proof), or RollbackError."""
        seen = self.witness.latest(self.origin)
        if seen is None:
            return  # first sight: trusted on first use, recorded by _advance_witness
        trusted = seen.checkpoint
        if trusted.tree_size > len(tree):
            with self._tree() as fresh:  # another process may have grown the log since
                if len(fresh) < trusted.tree_size:
                    raise RollbackError(
                        f"rollback: the log has {len(fresh)} entries but the witness "
                        f"{self.witness.folder} saw {trusted.tree_size} of {self.origin!r}: "
                        "the database was restored from an older copy or truncated; "
                        "refusing it"
                    )
                self._prove_extends(fresh, trusted)
            return
        self._prove_extends(tree, trusted)

    def _prove_extends(self, tree: tiles.StoredTree, trusted: cp.Checkpoint) -> None:
        size = len(tree)
        proof = tree.consistency_proof(trusted.tree_size) if 0 < trusted.tree_size < size else []
        current = cp.Checkpoint(self.origin, size, tree.root, trusted.timestamp)
        try:
            check_extends(trusted, current, proof)
        except RollbackError as exc:
            raise RollbackError(
                f"rollback: the log does not extend the checkpoint of size "
                f"{trusted.tree_size} seen by the witness {self.witness.folder} ({exc}); "
                "refusing it"
            ) from exc
        self._remember_tail(tree, trusted.tree_size, trusted.root_hash)

    def _advance_witness(self, tree: tiles.StoredTree, note: str) -> None:
        """Record ``note``, a checkpoint of a prefix of the log ``tree``, as the
        witness state. Under the state's lock the whole log is proved again to extend
        what is stored, so the stored and the new checkpoint are both prefixes of one
        tree and the state only moves forward."""
        checkpoint, _ = cp.parse_checkpoint(note)
        with self.witness.locked(self.origin):
            self._check_extends_witness(tree)
            seen = self.witness.latest(self.origin)
            if seen is None or checkpoint.tree_size >= seen.checkpoint.tree_size:
                self.witness.advance(note)
                self._remember_tail(tree, checkpoint.tree_size, checkpoint.root_hash)

    def _remember_tail(self, tree: tiles.StoredTree, size: int, root: bytes) -> None:
        if 0 < size <= len(tree) and (
            self._witnessed_tail is None or self._witnessed_tail[0] <= size
        ):
            self._witnessed_tail = (size, tree.leaf(size - 1).hex())
            self._witnessed_root = (size, root)

    def _check_witness(self, session: Session, tree: tiles.StoredTree) -> None:
        """The log must extend the newest checkpoint this home has witnessed."""
        path = self.home.witness_checkpoint
        if not path.exists():
            return
        note = path.read_text()
        keys = {
            checkpoint_key_name(k.key_id): public_key_from_hex(k.public_key)
            for k in session.exec(select(OperatorKey))
        }
        _, signatures = cp.parse_checkpoint(note)
        names = [s.key_name for s in signatures if s.key_name in keys]
        if not names:
            raise RollbackError("the witness checkpoint is not signed by this registry's keys")
        witness = cp.verify_checkpoint(note, names[0], keys[names[0]])
        if witness.tree_size > len(tree):
            raise RollbackError(
                f"the log has {len(tree)} entries but this home witnessed "
                f"{witness.tree_size}: log truncated; run 'consentry log verify'"
            )
        if tree.root_at(witness.tree_size) != witness.root_hash:
            raise RollbackError(
                "the log's first entries differ from the witnessed checkpoint: "
                "log rewritten; run 'consentry log verify'"
            )

    def add_cosignatures(self, note: str) -> str:
        """Store the signature lines of ``note`` (a witness-cosigned copy of a stored
        checkpoint) on that checkpoint; returns the stored note.

        Only lines are added: the body must be exactly a stored checkpoint's, so a
        witness can never change what the operator signed.
        """
        checkpoint, _ = cp.parse_checkpoint(note)
        with self.db.write() as session:
            row = session.get(CheckpointRow, checkpoint.tree_size)
            if row is None or cp.parse_checkpoint(row.note)[0] != checkpoint:
                raise NotFoundError(
                    f"no stored checkpoint of size {checkpoint.tree_size} with this body"
                )
            merged = cp.merge_signatures(row.note, note)
            if merged != row.note:
                row.note = merged
                session.add(row)
        return merged

    def cosigned_size(self, key_name: str, public_key: Ed25519PublicKey) -> int:
        """The largest tree size of a stored checkpoint that the witness key cosigned
        and whose root is the log's prefix root; 0 when there is none."""
        with self.db.read() as session:
            notes = [
                r.note
                for r in session.exec(
                    select(CheckpointRow).order_by(col(CheckpointRow.tree_size).desc())
                )
            ]
        for note in notes:
            try:
                checkpoint, _ = cp.verify_cosignature(note, key_name, public_key)
            except ConsentryError:
                continue
            with self._tree() as tree:
                if (
                    checkpoint.origin == self.origin
                    and checkpoint.tree_size <= len(tree)
                    and tree.root_at(checkpoint.tree_size) == checkpoint.root_hash
                ):
                    return checkpoint.tree_size
        return 0

    def latest_checkpoint(self) -> str:
        with self.db.read() as session:
            row = session.exec(
                select(CheckpointRow).order_by(col(CheckpointRow.tree_size).desc())
            ).first()
        if row is None:
            raise NotFoundError("the log has no checkpoint yet: run 'consentry log checkpoint'")
        return row.note

    def inclusion_proof(self, index: int, checkpoint_note: str | None = None) -> InclusionProof:
        """Proof that entry ``index`` is in the tree of the given (default: latest) checkpoint."""
        note = checkpoint_note or self.latest_checkpoint()
        checkpoint, _ = cp.parse_checkpoint(note)
        if not 0 <= index < checkpoint.tree_size:
            raise NotFoundError(
                f"entry {index} is not covered by the checkpoint of size {checkpoint.tree_size}:"
                " run 'consentry log checkpoint' first"
            )
        with self._tree() as whole:
            if len(whole) < checkpoint.tree_size:
                raise RollbackError(
                    f"the log has {len(whole)} entries but the checkpoint covers "
                    f"{checkpoint.tree_size}: log truncated; run 'consentry log verify'"
                )
            tree = tiles.StoredTree(whole.session, checkpoint.tree_size)
            leaf_hash = tree.leaf(index)
            hashes = tree.inclusion_proof(index)
            entry = whole.session.get(LogEntry, index)
        if (
            entry is None
            or entry.leaf_hash != leaf_hash.hex()
            or merkle.leaf_hash(entry.leaf_json.encode()) != leaf_hash
        ):
            raise LogIntegrityError(
                f"log entry {index} differs from its stored hash: the log was rewritten; "
                "run 'consentry log verify'"
            )
        return InclusionProof(
            index=index,
            tree_size=checkpoint.tree_size,
            leaf_hash=leaf_hash,
            hashes=hashes,
            checkpoint=note,
            leaf=entry.leaf_json,
        )

    def verify_log(self) -> LogReport:
        """Verify every row, leaf, signature and checkpoint (see ``registry.verify``),
        and that the log extends this party's witness state (reported, not raised)."""
        witness_file = self.home.witness_checkpoint
        witness = witness_file.read_text() if witness_file.exists() else None
        with self.db.read() as session:
            report = verify_log(session, witness)
        try:
            self.witness_check()
        except RollbackError as exc:
            report.problems.append(f"external witness: {exc}")
        return report

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """RFC 9162 consistency proof from ``old_size`` to ``new_size`` (default: the
        whole log), from O(log n) stored hashes."""
        with self._tree() as whole:
            size = len(whole) if new_size is None else new_size
            if size > len(whole):
                raise NotFoundError(f"the log has only {len(whole)} entries")
            if not 0 < old_size <= size:
                raise InputError(f"old size must be between 1 and {size}")
            return tiles.StoredTree(whole.session, size).consistency_proof(old_size)


def _hash_file(path: Path) -> tuple[str, int]:
    try:
        return hash_file(path)
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from exc


def parse_until(text: str | None) -> datetime | None:
    """``--until`` / ``--from`` values: ISO 8601, or None."""
    return None if text is None else parse_time(text)
