"""The checks of a log entry that read no database row, shared by ``log verify``
and the consent follower.

Invariants
- :class:`LogChecker` judges each entry in log order from the entries before it
  only: indexes without a gap, canonical leaves, an envelope signed by the operator
  key active at that index (the genesis key, then each rotation's successor), the
  subject's co-signature where the subject holds a key, a retired key signing
  nothing later, and records naming only records earlier in the log.
- What it keeps grows with records other than decisions (subject keys, grant ->
  subject, grantee ids), never with decisions.
- :class:`LogReport` collects problems; it never raises, so one run names every
  bad record.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from consentry.errors import ConsentryError
from consentry.registry import merkle
from consentry.registry.models import LogEntry, OperatorKey
from consentry.registry.signing import (
    Envelope,
    PendingSignature,
    SignatureBatcher,
    key_id_of,
    parse_canonical,
    public_key_from_hex,
)
from consentry.registry.statements import KIND_OF_TYPE

__all__ = ["LogChecker", "LogReport", "prefix_roots"]


@dataclass
class LogReport:
    """The outcome of ``verify_log``: ``ok`` iff ``problems`` is empty."""

    size: int = 0
    root: bytes = b""
    checkpoints: int = 0
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0  # wall time of the whole verification

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def entries_per_s(self) -> float:
        return self.size / self.seconds if self.seconds > 0 else 0.0


def prefix_roots(leaf_hashes: Sequence[bytes], sizes: Iterable[int]) -> dict[int, bytes]:
    """RFC 9162 roots of the first k leaves for each k in ``sizes``, in one O(n) pass.

    Keeps the compact range of perfect subtrees; the root of a prefix folds it
    right to left.
    """
    wanted = {s for s in sizes if 0 <= s <= len(leaf_hashes)}
    roots: dict[int, bytes] = {}
    if 0 in wanted:
        roots[0] = merkle.root_hash([])
    stack: list[tuple[int, bytes]] = []  # (height, hash), heights strictly decreasing
    for count, leaf in enumerate(leaf_hashes, start=1):
        node, height = leaf, 0
        while stack and stack[-1][0] == height:
            node = merkle.node_hash(stack.pop()[1], node)
            height += 1
        stack.append((height, node))
        if count in wanted:
            acc = stack[-1][1]
            for _, left in reversed(stack[:-1]):
                acc = merkle.node_hash(left, acc)
            roots[count] = acc
    return roots


def _record_id(row: Any) -> str:
    return str(row.key_id if isinstance(row, OperatorKey) else row.id)


class LogChecker:
    """Checks log leaves in index order against the signed history before them.

    Rows play no part: this is the one verifier of leaves (canonical JSON, kinds,
    the operator key in force at each index, subject co-signatures, key rotations,
    names of earlier records), shared by ``log verify`` (which compares rows on
    top, in ``_Verifier``) and by the gateway's consent follower
    (``registry.consent``), which builds its facts from what passes here.

    ``deferred``: queue the Ed25519 checks in a :class:`SignatureBatcher` and report
    them in ``check_signatures`` (``log verify``); otherwise each is checked at once
    and a bad one raises :class:`SignatureError` (the follower).
    """

    def __init__(self, deferred: bool = False) -> None:
        self.deferred = deferred
        self.keys: dict[str, Ed25519PublicKey] = {}  # every operator key ever introduced
        self.active_key: str | None = None
        self.subject_keys: dict[str, str | None] = {}  # subject id -> logged public key hex
        self.grant_subject: dict[str, str] = {}
        self.grantees: set[str] = set()
        self.erased: set[str] = set()
        self.opted_out: set[str] = set()  # their kept photos are deleted by the opt-out
        self.signatures = SignatureBatcher()
        # key id -> (log index introducing it, log index retiring it or None)
        self.key_span: dict[str, tuple[int, int | None]] = {}
        self.rotations: dict[str, tuple[int, str]] = {}  # old key id -> (index, new key id)
        self.pending_labels: deque[str] = deque()  # of signatures not yet harvested
        self.failed_labels: list[str] = []  # of signatures harvested and bad

    def verify_envelope(
        self,
        entry: LogEntry,
        envelope: Envelope,
        statement: dict[str, Any],
        trusted: dict[str, Ed25519PublicKey],
        required: list[str],
    ) -> None:
        """Structural checks now; the Ed25519 checks now or batched (``check_signatures``)."""
        if not self.deferred:
            envelope.verify(trusted, required, statement=statement)
            return
        collected: list[PendingSignature] = []
        envelope.verify(trusted, required, statement=statement, deferred=collected)
        # only an envelope that passed every other check queues its signatures
        label = f"{entry.kind} {entry.record_id} (log index {entry.idx})"
        for item in collected:
            self.signatures.add(item)
            self.pending_labels.append(label)

    def check_leaf(self, entry: LogEntry, leaf: bytes) -> tuple[str, dict[str, Any]]:
        """Verify one leaf (its hash is the caller's); returns its kind and statement."""
        body = parse_canonical(leaf)
        envelope = Envelope.from_json(body.get("envelope", {}))
        statement = envelope.statement
        kind = KIND_OF_TYPE.get(str(statement.get("type")))
        if kind is None or kind != body.get("kind") or kind != entry.kind:
            raise ConsentryError(f"leaf kind {body.get('kind')!r} does not match its statement")
        if body.get("id") != entry.record_id:
            raise ConsentryError("leaf id differs from the entry's record id")
        if kind == "key":
            self.check_genesis(entry, envelope, statement)
        elif kind == "key-rotation":
            self.check_rotation(entry, envelope, statement)
        else:
            self.check_record(entry, kind, envelope, statement)
        return kind, statement

    def required_operator(self, envelope: Envelope, statement: dict[str, Any]) -> str:
        active = self.active_key
        if active is None:
            raise ConsentryError("no operator key is active (missing genesis entry)")
        signers = set(envelope.key_ids)
        if active not in signers:
            retired = signers & set(self.keys)
            if retired:
                raise ConsentryError(
                    f"signed by retired operator key {sorted(retired)[0][:16]}"
                    f" (active key is {active[:16]})"
                )
            raise ConsentryError("not signed by the active operator key")
        issuer = statement.get("issuer", active)
        if issuer != active:
            raise ConsentryError(f"issuer {str(issuer)[:16]} is not the active operator key")
        return active

    def check_genesis(self, entry: LogEntry, envelope: Envelope, statement: dict[str, Any]) -> None:
        if entry.idx != 0 or self.active_key is not None:
            raise ConsentryError("an operator-key entry may only open the log")
        public = public_key_from_hex(str(statement.get("public_key")))
        key_id = str(statement.get("key_id"))
        self.verify_envelope(entry, envelope, statement, {key_id: public}, [key_id])
        self.keys[key_id] = public
        self.key_span[key_id] = (entry.idx, None)
        self.active_key = key_id
        self.on_genesis(entry, key_id, statement)

    def check_rotation(
        self, entry: LogEntry, envelope: Envelope, statement: dict[str, Any]
    ) -> None:
        old = self.required_operator(envelope, {})
        if statement.get("old_key_id") != old:
            raise ConsentryError("rotation does not start from the active key")
        new_id = str(statement.get("new_key_id"))
        public = public_key_from_hex(str(statement.get("new_public_key")))
        self.verify_envelope(
            entry, envelope, statement, {**self.keys, new_id: public}, [old, new_id]
        )
        self.keys[new_id] = public
        self.key_span[old] = (self.key_span[old][0], entry.idx)
        self.key_span[new_id] = (entry.idx, None)
        self.rotations[old] = (entry.idx, new_id)
        self.active_key = new_id
        self.on_rotation(entry, old, new_id, statement)

    def check_record(
        self, entry: LogEntry, kind: str, envelope: Envelope, statement: dict[str, Any]
    ) -> None:
        operator = self.required_operator(envelope, statement)
        required = [operator]
        subject_id = self._check_names(kind, statement)
        trusted = dict(self.keys)
        if kind == "subject-key":
            self._require_key_change_signers(statement, trusted, required)
        elif subject_id is not None:
            self._require_subject_key(subject_id, statement, trusted, required)
        self.verify_envelope(entry, envelope, statement, trusted, required)
        # the history grows only by entries that passed every check above
        record_id = str(statement.get("id"))
        self._remember(kind, record_id, statement, subject_id)
        self.on_record(entry, kind, record_id, statement)

    def _check_names(self, kind: str, statement: dict[str, Any]) -> str | None:
        """Every record the entry names is earlier in the log (and its subject not
        erased); returns the subject whose key must co-sign (grants, revocations)."""
        if kind in ("grant", "grantee-key"):
            if str(statement.get("grantee")) not in self.grantees:
                raise ConsentryError(
                    f"names grantee {statement.get('grantee')} not earlier in the log"
                )
            return str(statement.get("subject")) if kind == "grant" else None
        if kind == "revocation":
            subject_id = self.grant_subject.get(str(statement.get("grant")))
            if subject_id is None:
                raise ConsentryError("revokes a grant that is not earlier in the log")
            return subject_id
        if kind in ("enrollment", "erasure", "prior", "opt-out", "subject-key"):
            named = str(statement.get("subject"))
            if named not in self.subject_keys:
                raise ConsentryError(f"names subject {named} not earlier in the log")
            if named in self.erased:
                raise ConsentryError(f"names subject {named}, erased earlier in the log")
        elif kind == "decision":
            self.check_decision_names(statement)
        return None

    def _require_subject_key(
        self,
        subject_id: str,
        statement: dict[str, Any],
        trusted: dict[str, Ed25519PublicKey],
        required: list[str],
    ) -> None:
        """A subject holding a key must have co-signed with it: adds it to
        ``trusted`` and ``required``."""
        if subject_id not in self.subject_keys:
            raise ConsentryError(f"names subject {subject_id} not earlier in the log")
        subject_key = self.subject_keys[subject_id]
        if subject_key is not None:
            public = public_key_from_hex(subject_key)
            subject_key_id = key_id_of(public)
            if statement.get("subject_key") != subject_key_id:
                raise ConsentryError("lacks the signature of the subject's key")
            trusted[subject_key_id] = public
            required.append(subject_key_id)

    def _require_key_change_signers(
        self,
        statement: dict[str, Any],
        trusted: dict[str, Ed25519PublicKey],
        required: list[str],
    ) -> None:
        """A subject's key change starts from their current key and is co-signed by the
        new key (possession), and by the old key unless the operator makes it, for a
        recorded reason, because the old one is lost."""
        current = self.subject_keys[str(statement.get("subject"))]
        current_id = None if current is None else key_id_of(public_key_from_hex(current))
        if statement.get("old_key") != current_id:
            raise ConsentryError("the key change does not start from the subject's current key")
        new = public_key_from_hex(str(statement.get("new_public_key")))
        if key_id_of(new) != statement.get("new_key") or statement.get("new_key") == current_id:
            raise ConsentryError("the key change names a new key that does not match or is not new")
        trusted[key_id_of(new)] = new
        required.append(key_id_of(new))
        authority = statement.get("authority")
        if authority == "subject" and current is not None and current_id is not None:
            trusted[current_id] = public_key_from_hex(current)
            required.append(current_id)
        elif authority != "operator" or not str(statement.get("reason") or "").strip():
            raise ConsentryError(
                "a key change is by the subject's old key or by the operator with a reason"
            )

    def _remember(
        self, kind: str, record_id: str, statement: dict[str, Any], subject_id: str | None
    ) -> None:
        """Grow the verified history by one entry."""
        if kind == "subject":
            self.subject_keys[record_id] = statement.get("public_key")
        elif kind == "subject-key":
            self.subject_keys[str(statement.get("subject"))] = str(statement.get("new_public_key"))
        elif kind == "grantee":
            self.grantees.add(record_id)
        elif kind == "grant":
            self.grant_subject[record_id] = str(subject_id)
        elif kind == "erasure":
            self.erased.add(str(statement.get("subject")))
        elif kind == "opt-out":
            self.opted_out.add(str(statement.get("subject")))

    # hooks for what is built on the verified history (rows, consent facts)
    def on_genesis(self, entry: LogEntry, key_id: str, statement: dict[str, Any]) -> None:
        """Called after the genesis entry verified."""

    def on_rotation(
        self, entry: LogEntry, old: str, new_id: str, statement: dict[str, Any]
    ) -> None:
        """Called after a key rotation verified."""

    def on_record(
        self, entry: LogEntry, kind: str, record_id: str, statement: dict[str, Any]
    ) -> None:
        """Called after any other entry verified."""

    def harvest_signatures(self) -> None:
        """Take the results of the batched checks that have finished (bounded memory:
        only the labels of signatures still in flight are kept)."""
        for ok in self.signatures.ready():
            label = self.pending_labels.popleft()
            if not ok:
                self.failed_labels.append(label)

    def check_signatures(self) -> list[str]:
        """Run the batched Ed25519 checks; the labels of the entries that failed."""
        self.harvest_signatures()
        rest = self.signatures.results()
        failed = self.failed_labels + [
            label for label, ok in zip(self.pending_labels, rest, strict=True) if not ok
        ]
        self.pending_labels.clear()
        self.failed_labels = []
        return failed

    def check_decision_names(self, statement: dict[str, Any]) -> None:
        """A decision names only a grantee, subjects and grants earlier in the log."""
        grantee = str(statement.get("grantee"))
        if grantee not in self.grantees:
            raise ConsentryError(f"names grantee {grantee} not earlier in the log")
        for named in statement.get("subjects") or ():
            if named not in self.subject_keys:
                raise ConsentryError(f"names subject {named} not earlier in the log")
        for named in statement.get("grants") or ():
            if named not in self.grant_subject:
                raise ConsentryError(f"names grant {named} not earlier in the log")
