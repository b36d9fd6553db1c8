"""A subject's own view of their likeness: authenticated by their key, provable offline.

A subject signs a short request with their key (:func:`make_request`: no password,
no account); the registry checks it (:func:`authenticate`) and answers with every
grant of theirs with its status and every logged decision that involved their
likeness (allowed, refused or held), each with an inclusion proof against one
signed checkpoint (:func:`subject_view`), which the subject verifies offline with
the operator's public key (:func:`verify_view`).

Invariants
- A request is accepted only if it is signed by the subject's current key (as the
  signed log holds it, key changes applied), names this registry's operator key as its
  audience (a request made for another registry is refused), is at most
  :data:`REQUEST_WINDOW` away from the registry's clock, and its nonce was not seen
  in that window (:class:`NonceCache`: a captured request cannot be replayed).
- The view lists decisions by the subjects they name; each comes with the log leaf
  itself, and :func:`verify_view` checks that each leaf is a decision naming the
  subject, with the id, outcome and index the view reports, included under a
  checkpoint signed by the operator key: the answer cannot list a decision the log
  does not hold, nor misstate one. (It can omit one: completeness needs a monitor
  replaying the log, ``consentry log verify``.)
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlmodel import col, select

from consentry.errors import InputError, NotFoundError, ProofError, SignatureError
from consentry.registry.models import Decision
from consentry.registry.offline import verify_inclusion_bundle
from consentry.registry.signing import (
    Envelope,
    SigningKey,
    key_id_of,
    parse_canonical,
    public_key_from_hex,
)
from consentry.registry.statements import format_time, parse_time
from consentry.registry.store import Registry
from consentry.registry.views import grant_json

__all__ = [
    "REQUEST_TYPE",
    "REQUEST_WINDOW",
    "NonceCache",
    "authenticate",
    "make_request",
    "subject_view",
    "verify_view",
]

REQUEST_TYPE = "consentry.subject-request"
REQUEST_WINDOW = timedelta(minutes=5)
MAX_DECISIONS = 500  # newest first; ``before`` pages back


def make_request(
    key: SigningKey, subject_id: str, audience: str, now: datetime, action: str = "view"
) -> Envelope:
    """A request by the holder of ``key``, for the registry whose operator key id is
    ``audience``."""
    statement = {
        "type": REQUEST_TYPE,
        "version": 1,
        "subject": subject_id,
        "action": action,
        "audience": audience,
        "time": format_time(now),
        "nonce": secrets.token_hex(16),
    }
    return Envelope.sign(statement, [key])


@dataclass
class NonceCache:
    """Nonces seen within the request window (a request is accepted once)."""

    _seen: dict[str, datetime] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def claim(self, nonce: str, now: datetime) -> bool:
        """True the first time ``nonce`` is seen within the window, then False."""
        with self._lock:
            for old in [n for n, t in self._seen.items() if now - t > 2 * REQUEST_WINDOW]:
                del self._seen[old]
            if nonce in self._seen:
                return False
            self._seen[nonce] = now
            return True


def authenticate(
    registry: Registry, envelope: Envelope, nonces: NonceCache, action: str = "view"
) -> str:
    """The subject id the signed request is from (see the module's invariants)."""
    statement = parse_canonical(envelope.payload)
    if statement.get("type") != REQUEST_TYPE or statement.get("action") != action:
        raise SignatureError(f"not a signed subject request to {action}")
    subject_id = str(statement.get("subject"))
    state = registry.consent
    state.refresh()
    if subject_id not in state.subjects:
        raise NotFoundError(f"no subject {subject_id!r}")
    current = state.subject_key(subject_id)  # their newest key change applied
    if current is None:
        raise SignatureError(
            f"subject {subject_id} holds no key: their view is given by the operator"
        )
    public = public_key_from_hex(current)
    envelope.verify({key_id_of(public): public}, [key_id_of(public)], statement=statement)
    if statement.get("audience") != registry.key_id:
        raise SignatureError("the request was made for another registry (audience)")
    now = registry.now()
    try:
        moment = parse_time(str(statement.get("time")))
    except InputError as exc:
        raise SignatureError("the request has no valid time") from exc
    if abs(moment - now) > REQUEST_WINDOW:
        raise SignatureError(
            f"the request's time {format_time(moment)} is more than "
            f"{int(REQUEST_WINDOW.total_seconds() // 60)} minutes from the registry's clock"
        )
    nonce = statement.get("nonce")
    if not isinstance(nonce, str) or len(nonce) < 16 or not nonces.claim(nonce, now):
        raise SignatureError("the request was used already (replay)")
    return subject_id


def _outcome(row: Decision) -> str:
    if row.held_json is not None:
        return "held"
    return "allowed" if row.allowed else "refused"


def subject_view(registry: Registry, subject_id: str, before: int | None = None) -> dict[str, Any]:
    """Grants and decisions of ``subject_id``, with proofs against one checkpoint."""
    note = registry.latest_checkpoint()
    pattern = f'%"{subject_id}"%'  # ids are [a-z_0-9]: no LIKE metacharacters
    query = select(Decision).where(col(Decision.subjects_json).like(pattern))
    if before is not None:
        query = query.where(col(Decision.log_index) < before)
    query = query.order_by(col(Decision.log_index).desc()).limit(MAX_DECISIONS)
    with registry.db.read() as session:
        rows = [r for r in session.exec(query) if subject_id in json.loads(r.subjects_json)]
    size = int(note.splitlines()[1])
    decisions = [
        {
            "id": row.id,
            "time": row.created_at,
            "grantee": row.grantee_id,
            "purpose": row.purpose,
            "outcome": _outcome(row),
            "grants": row.grants,
            "log_index": row.log_index,
            "proof": registry.inclusion_proof(row.log_index, note).to_json(),
        }
        for row in rows
        if row.log_index < size
    ]
    return {
        "subject": subject_id,
        "checkpoint": note,
        "grants": [grant_json(g, s) for g, s in registry.list_grants(subject=subject_id)],
        "decisions": decisions,
        "more": len(rows) == MAX_DECISIONS,
    }


def verify_view(view: dict[str, Any], operator_keys: Sequence[Ed25519PublicKey]) -> int:
    """Check every decision of ``view`` against its proof (see the module's
    invariants); returns how many were verified. Raises ProofError or SignatureError."""
    subject = str(view.get("subject"))
    for item in view.get("decisions", []):
        verify_inclusion_bundle(item["proof"], operator_keys)
        if int(item["proof"]["index"]) != int(item["log_index"]):
            raise ProofError(f"decision {item.get('id')}: the proof is for another index")
        leaf = parse_canonical(str(item["proof"]["leaf"]).encode())
        statement = Envelope.from_json(leaf["envelope"]).statement
        if leaf.get("kind") != "decision" or statement.get("id") != item.get("id"):
            raise ProofError(f"decision {item.get('id')}: the log leaf is another record")
        if subject not in statement.get("subjects", []):
            raise ProofError(f"decision {item.get('id')}: the logged decision names other subjects")
        logged = (
            "held"
            if "held" in statement
            else ("allowed" if statement.get("allowed") else "refused")
        )
        if item.get("outcome") != logged:
            raise ProofError(f"decision {item.get('id')}: the outcome differs from the log")
    return len(view.get("decisions", []))
