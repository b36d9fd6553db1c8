"""What-if prototypes for ``bench registry --profile`` (bench-only; consentry is untouched).

They measure what the fixes suggested for the misses would buy, on the same
machine in the same run:

* :func:`lean_grant` -- ``Registry.grant`` as one SQLite write transaction with
  SQLAlchemy core statements: one SELECT checks subject, grantee, operator key
  and fetches ``max(idx)``; then sign, and two INSERTs. Same rows, same leaf,
  same signature as ``Registry.grant``; ``verify_log`` must accept the result.
* :func:`grant_components` and :func:`verify_components` -- the cost of each
  step of a grant and of verifying one entry, timed directly (cProfile inflates
  Python-heavy code against C calls such as Ed25519, so its shares mislead).
* :func:`fast_canonical` -- a drop-in ``canonical_json`` that uses the C
  ``json.dumps`` when the value provably serialises the same under RFC 8785
  (no floats, ints within +-(2**53-1), ASCII keys), falling back to rfc8785.
  Patched into ``consentry.registry.signing`` only for the duration of a block.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from functools import partial
from typing import Any

from sqlalchemy import insert, text
from sqlmodel import col, select

from consentry.errors import DuplicateError, NotFoundError, RetiredKeyError
from consentry.registry import merkle, signing, verify
from consentry.registry.log import RegistryLog
from consentry.registry.models import (
    Grant,
    Grantee,
    LogEntry,
    OperatorKey,
    Prior,
    Revocation,
    Subject,
)
from consentry.registry.signing import Envelope, _pae, parse_canonical
from consentry.registry.statements import format_time, statement_of
from consentry.registry.store import Registry, leaf_bytes


def method(owner: Any, *names: str) -> Any:
    """The first of ``names`` that ``owner`` has (Registry's internals get renamed,
    e.g. ``_append`` -> ``append``); None if it has none."""
    for name in names:
        found = getattr(owner, name, None)
        if found is not None:
            return found
    return None


# the log's internals (``registry.log``): the low-level append and the key check
APPEND = ("_append",)
SIGNING_KEY = ("_signing_key",)
APPEND_NAME = next(n for n in APPEND if hasattr(RegistryLog, n))


_CHECK = text(
    "SELECT (SELECT count(*) FROM subjects WHERE id = :s), "
    "(SELECT public_key FROM subjects WHERE id = :s), "
    "(SELECT count(*) FROM grantees WHERE id = :g), "
    "(SELECT retired_at_index FROM keys WHERE key_id = :k), "
    "(SELECT count(*) FROM keys WHERE key_id = :k), "
    "(SELECT max(idx) FROM log_entries)"
)
_GRANT_INSERT = insert(Grant.__table__)  # type: ignore[attr-defined]
_ENTRY_INSERT = insert(LogEntry.__table__)  # type: ignore[attr-defined]


def lean_grant(registry: Registry, key_id: str, subject_id: str, grantee_id: str,
               until: datetime) -> Grant:
    """Prototype of the suggested fix: one transaction, core SQL, key id computed once."""
    key = registry.log._key
    with registry.db.writer.begin() as conn:  # BEGIN IMMEDIATE: the writer lock (SQLite)
        n_sub, sub_key, n_gte, retired, n_key, last = conn.execute(
            _CHECK, {"s": subject_id, "g": grantee_id, "k": key_id}
        ).one()
        if not n_sub or not n_gte:
            raise NotFoundError("no such subject or grantee")
        if sub_key is not None:
            raise NotImplementedError("prototype: subjects holding a key are not covered")
        if not n_key or retired is not None:
            raise RetiredKeyError("operator key missing or retired")
        index = 0 if last is None else int(last) + 1
        row = _new_grant(key_id, subject_id, grantee_id, until, registry.now())
        row.log_index = index
        stamp = row.created_at
        envelope = Envelope.sign(statement_of(row), [key])
        data = leaf_bytes("grant", row.id, envelope)
        values = {c.name: getattr(row, c.name) for c in Grant.__table__.columns}  # type: ignore[attr-defined]
        try:
            conn.execute(_GRANT_INSERT, values)
            conn.execute(_ENTRY_INSERT, {
                "idx": index, "kind": "grant", "record_id": row.id,
                "leaf_json": data.decode(), "leaf_hash": merkle.leaf_hash(data).hex(),
                "created_at": stamp,
            })
        except Exception as exc:  # IntegrityError, as append reports it
            raise DuplicateError(f"grant {row.id} conflicts") from exc
    return row


_SAFE_INT = (1 << 53) - 1


def _plain(value: Any) -> bool:
    """True when json.dumps(sort_keys) gives exactly the RFC 8785 bytes of ``value``."""
    if value is None or isinstance(value, (str, bool)):
        return True
    if isinstance(value, int):
        return -_SAFE_INT <= value <= _SAFE_INT
    if isinstance(value, dict):
        return all(isinstance(k, str) and k.isascii() and _plain(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    return False  # floats and anything else: rfc8785 decides


def fast_canonical(original: Any) -> Any:
    def canonical_json(value: Any) -> bytes:
        if _plain(value):
            try:
                return json.dumps(value, sort_keys=True, separators=(",", ":"),
                                  ensure_ascii=False, allow_nan=False).encode()
            except (UnicodeEncodeError, ValueError):
                pass  # lone surrogates and the like: let rfc8785 decide
        return original(value)

    return canonical_json


@contextmanager
def patched_canonical_json() -> Iterator[None]:
    """Use :func:`fast_canonical` inside consentry.registry.signing for the block."""
    original = signing.canonical_json
    signing.canonical_json = fast_canonical(original)
    try:
        yield
    finally:
        signing.canonical_json = original


# ------------------------------------------------------------------ unprofiled component costs
def _interleaved(ops: dict[str, Callable[[], object]], calls: int,
                 repeat: int = 5) -> dict[str, float]:
    """Per-call seconds of each op: the best of ``repeat`` blocks of ``calls`` calls, the
    ops taking turns block by block so that load from other processes hits all alike."""
    for fn in ops.values():
        fn()
    best = dict.fromkeys(ops, float("inf"))
    for _ in range(repeat):
        for name, fn in ops.items():
            began = time.perf_counter()
            for _ in range(calls):
                fn()
            best[name] = min(best[name], (time.perf_counter() - began) / calls)
    return best


def grant_components(registry: Registry, subject_id: str, grantee_id: str, until: datetime,
                     calls: int) -> list[list[object]]:
    """What one ``Registry.grant`` spends where, timed without a profiler's distortion.

    Every measured operation runs in blocks of ``calls`` calls, best of 5 blocks,
    the operations taking turns (see ``_interleaved``); derived rows are
    differences of measured ones. Appends extra (valid) grants to the registry.
    """
    key, key_id = registry.log._key, registry.key_id
    db = registry.db

    def new_row() -> Grant:
        return _new_grant(key_id, subject_id, grantee_id, until, registry.now())

    def empty_write() -> None:
        with db.write():
            pass

    signing_key = method(registry.log, *SIGNING_KEY)
    append = method(registry.log, *APPEND)

    def write_signing_key() -> None:
        with db.write() as session:
            signing_key(session)

    def sign() -> Envelope:
        return Envelope.sign(statement_of(row), [key])

    def write_append() -> None:
        fresh = new_row()
        with db.write() as session:
            fresh.issuer_key_id = signing_key(session).key_id
            envelope = Envelope.sign(statement_of(fresh), [key])
            append(session, [(fresh, "grant", fresh.id, envelope)])

    row = new_row()
    message = b"x" * 420  # about the PAE size of a grant statement
    m = _interleaved({
        "grant": lambda: registry.grant(subject_id, grantee_id, ["restore"], not_after=until),
        "subject": lambda: registry.get_subject(subject_id),
        "grantee": lambda: registry.get_grantee(grantee_id),
        "empty_write": empty_write,
        "write_key": write_signing_key,
        "construct": new_row,
        "sign": sign,
        "key_id": lambda: key.key_id,
        "ed25519": lambda: key.private_key.sign(message),
        "canonical": lambda: signing.canonical_json(statement_of(row)),
        "write_append": write_append,
    }, calls)
    append_only = m["write_append"] - m["write_key"] - m["construct"] - m["sign"]
    parts = m["subject"] + m["grantee"] + m["write_append"]
    ms = 1000.0

    def r(label: str, seconds: float, kind: str) -> list[object]:
        return [label, f"{seconds * ms:.3f}", f"{100 * seconds / m['grant']:.0f}%", kind]

    return [
        r("Registry.grant, whole", m["grant"], "measured"),
        r("  get_subject(id): read Session, SELECT, ORM load", m["subject"], "measured"),
        r("  get_grantee(id): read Session, SELECT, ORM load", m["grantee"], "measured"),
        r("  db.write() doing nothing: Session, BEGIN IMMEDIATE, COMMIT", m["empty_write"],
          "measured"),
        r("  signing_key: Session.get(OperatorKey)", m["write_key"] - m["empty_write"],
          "derived"),
        r("  Grant(...) model construction (SQLModel)", m["construct"], "measured"),
        r("  statement_of + Envelope.sign", m["sign"], "measured"),
        r("    of which SigningKey.key_id (called 1x here, 4x per grant)", m["key_id"],
          "measured"),
        r("    of which Ed25519 sign of ~420 bytes", m["ed25519"], "measured"),
        r("    of which canonical_json(statement) (rfc8785)", m["canonical"], "measured"),
        r(f"  {APPEND_NAME}: SELECT max(idx), leaf_bytes, ORM add + flush; + COMMIT writing rows",
          append_only, "derived"),
        r("  rest (argument checks, 3 more key_id calls, GC, noise)", m["grant"] - parts,
          "derived"),
    ]


def _new_grant(key_id: str, subject_id: str, grantee_id: str, until: datetime,
               now: datetime) -> Grant:
    stamp = format_time(now)
    return Grant(
        id=f"grt_{secrets.token_hex(10)}", subject_id=subject_id, grantee_id=grantee_id,
        purposes_json=json.dumps(["restore"]), priors_json=json.dumps([]),
        not_before=stamp, not_after=format_time(until),
        constraints_json=signing.canonical_json({}).decode(), evidence_sha256=None,
        issuer_key_id=key_id, subject_key_id=None, created_at=stamp, log_index=-1,
    )


def verify_components(registry: Registry, verify_cpu_per_entry: float,
                      sample: int = 300) -> list[list[object]]:
    """What ``verify_log`` spends per entry, each step timed over a sample of grant leaves
    (best of 5 interleaved rounds); shares are of the sum of the top-level steps."""
    tables = list(dict.fromkeys(getattr(verify, "_ROW_TYPES", {}).values())) or [
        Subject, Grantee, Grant, Revocation, Prior, OperatorKey]
    with registry.db.read() as session:
        entries = list(session.exec(select(LogEntry).order_by(col(LogEntry.idx))))
        rows_by_id = {g.id: g for g in session.exec(select(Grant))}
    total = len(entries)
    load_entries = partial(_load_entries, registry)
    load_rows = partial(_load_rows, registry, tables)

    picked = [e for e in entries if e.kind == "grant"][-sample:]
    leaves = [e.leaf_json.encode() for e in picked]
    bodies = [parse_canonical(leaf) for leaf in leaves]
    envelopes = [Envelope.from_json(b["envelope"]) for b in bodies]
    statements = [env.statement for env in envelopes]
    grant_rows = [rows_by_id[s["id"]] for s in statements]
    key_id = registry.key_id
    public = registry.log._key.public_key
    trusted = {key_id: public}
    messages = [_pae(env.payload_type, env.payload) for env in envelopes]
    n = len(picked)
    each = partial(_each, n)
    fast_parse_leaf = partial(_fast_parse_leaves, leaves)
    fast_statement = partial(_fast_statements, envelopes)

    whole = _interleaved({"load_entries": load_entries, "load_rows": load_rows}, 1, repeat=2)
    m = {k: v / total for k, v in whole.items()}
    per = _interleaved({
        "leaf_hash": each(lambda i: merkle.leaf_hash(leaves[i])),
        "parse_leaf": each(lambda i: parse_canonical(leaves[i])),
        "from_json": each(lambda i: Envelope.from_json(bodies[i]["envelope"])),
        "statement": each(lambda i: envelopes[i].statement),
        "verify": each(lambda i: envelopes[i].verify(trusted, [key_id])),
        "ed25519": each(lambda i: public.verify(envelopes[i].signatures[0].signature,
                                                messages[i])),
        "compare": each(lambda i: statement_of(grant_rows[i]) == statements[i]),
        "fast_leaf": fast_parse_leaf,
        "fast_statement": fast_statement,
    }, 1)
    m |= {k: v / n for k, v in per.items()}
    top = ("load_entries", "load_rows", "leaf_hash", "parse_leaf", "from_json", "statement",
           "verify", "compare")
    steps = sum(m[k] for k in top)
    us = 1e6

    def r(label: str, key: str, kind: str = "measured") -> list[object]:
        return [label, f"{m[key] * us:.1f}", f"{100 * m[key] / steps:.0f}%", kind]

    return [
        ["verify_log, CPU per entry (table 2; other moment, other load)",
         f"{verify_cpu_per_entry * us:.1f}", "", "measured"],
        ["sum of the steps below (same moment)", f"{steps * us:.1f}", "100%", "sum"],
        r("  load LogEntry rows through the ORM", "load_entries"),
        r(f"  load the rows of {len(tables)} tables through the ORM (per entry)", "load_rows"),
        r("  merkle.leaf_hash(leaf)", "leaf_hash"),
        r("  parse_canonical(leaf): json.loads + rfc8785 re-encode", "parse_leaf"),
        r("  Envelope.from_json (base64)", "from_json"),
        r("  envelope.statement: parse_canonical(payload)", "statement"),
        r("  envelope.verify: parse_canonical(payload) AGAIN + Ed25519", "verify"),
        r("    of which Ed25519 verify (cryptography)", "ed25519"),
        r("  statement_of(row) == statement", "compare"),
        r("  what-if: parse_canonical(leaf) with C json.dumps fast path", "fast_leaf",
          "what-if"),
        r("  what-if: envelope.statement with C json.dumps fast path", "fast_statement",
          "what-if"),
    ]


def _load_entries(registry: Registry) -> None:
    """Load every LogEntry row through the ORM, in log order."""
    with registry.db.read() as session:
        for _ in session.exec(select(LogEntry).order_by(col(LogEntry.idx))):
            pass


def _load_rows(registry: Registry, tables: list[Any]) -> None:
    """Load every row of ``tables`` through the ORM."""
    with registry.db.read() as session:
        for table in tables:
            list(session.exec(select(table)))


def _each(n: int, fn: Callable[[int], object]) -> Callable[[], None]:
    """A call that runs ``fn(i)`` for ``i`` in ``range(n)``."""
    def loop() -> None:
        for i in range(n):
            fn(i)
    return loop


def _fast_parse_leaves(leaves: list[bytes]) -> None:
    with patched_canonical_json():
        for leaf in leaves:
            parse_canonical(leaf)


def _fast_statements(envelopes: list[Envelope]) -> None:
    with patched_canonical_json():
        for env in envelopes:
            env.statement  # noqa: B018  (the property parses the payload)
