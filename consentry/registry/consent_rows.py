"""The rows' check: cached database rows compared with the signed consent facts.

Invariants
- Rows decide nothing (the facts do); a row that differs from the signed entry it
  caches, is missing, or has no signed entry is a :class:`LogIntegrityError`, which
  makes the gate refuse and the CLI exit 2.
- Race-free by read order (see :meth:`RowChecks.check_rows`): every row compared is
  of an entry the follower holds, and every entry below the size followed before
  the read must have its row.
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, NamedTuple, cast

from sqlalchemy import Connection, Table
from sqlmodel import Session

from consentry.errors import LogIntegrityError
from consentry.registry.consent_facts import SignedGrant, SignedSubject
from consentry.registry.models import Grant, Revocation, Subject
from consentry.registry.raw_sql import RawStatement

if TYPE_CHECKING:
    from consentry.registry.store import Registry

__all__ = ["RowChecks"]


def _table(model: Any) -> Table:
    return cast(Table, model.__table__)


class _SubjectRow(NamedTuple):
    """The columns of a subject row that the rows' check compares (read with Core:
    no ORM objects on the gate's path)."""

    id: str
    display_name: str
    aliases_json: str
    public_key: str | None
    log_index: int

    @property
    def aliases(self) -> list[str]:
        return list(json.loads(self.aliases_json))


class _GrantRow(NamedTuple):
    id: str
    subject_id: str
    grantee_id: str
    purposes_json: str
    priors_json: str
    not_before: str
    not_after: str | None
    log_index: int

    @property
    def purposes(self) -> list[str]:
        return list(json.loads(self.purposes_json))

    @property
    def priors(self) -> list[str]:
        return list(json.loads(self.priors_json))


class _RevocationRow(NamedTuple):
    id: str
    grant_id: str
    log_index: int


_SUBJECTS, _GRANTS, _REVOCATIONS = (_table(m).name for m in (Subject, Grant, Revocation))


@functools.lru_cache(maxsize=256)
def _rows_statement(subjects: int, signed: int) -> RawStatement:
    """The three kinds of row in ONE statement (one snapshot, one round trip), on the
    cursor (``raw_sql``): a kind tag, seven text columns and the log index; subject
    rows by id (``:s0``...), grant rows by subject, revocation rows of the signed
    grant ids (``:g0``...) and of every grant row of those subjects. One text per
    pair of counts (``subjects`` >= 1)."""
    ids = ", ".join(f":s{i}" for i in range(subjects))
    of_signed = f"grant_id IN ({', '.join(f':g{i}' for i in range(signed))}) OR " if signed else ""
    return RawStatement(
        f"SELECT 's', id, display_name, aliases_json, public_key, NULL, NULL, NULL, log_index "
        f"FROM {_SUBJECTS} WHERE id IN ({ids}) "
        f"UNION ALL SELECT 'g', id, subject_id, grantee_id, purposes_json, priors_json, "
        f"not_before, not_after, log_index FROM {_GRANTS} WHERE subject_id IN ({ids}) "
        f"UNION ALL SELECT 'r', id, grant_id, NULL, NULL, NULL, NULL, NULL, log_index "
        f"FROM {_REVOCATIONS} WHERE {of_signed}"
        f"grant_id IN (SELECT id FROM {_GRANTS} WHERE subject_id IN ({ids}))"
    )


_Rows = tuple[dict[str, _SubjectRow], dict[str, _GrantRow], dict[str, _RevocationRow]]


def _read_rows(connection: Connection, wanted: list[str], signed: list[str]) -> _Rows:
    """The subject, grant and revocation rows of ``wanted`` (and revocation rows of
    the ``signed`` grant ids), read by :func:`_rows_statement`."""
    subjects: dict[str, _SubjectRow] = {}
    grants: dict[str, _GrantRow] = {}
    revocations: dict[str, _RevocationRow] = {}
    params = {f"s{i}": v for i, v in enumerate(wanted)} | {f"g{i}": v for i, v in enumerate(signed)}
    for kind, a, b, c, d, e, f, g, index in _rows_statement(len(wanted), len(signed)).rows(
        connection, params
    ):
        if kind == "s":
            subjects[a] = _SubjectRow(a, b, c, d, index)
        elif kind == "g":
            grants[a] = _GrantRow(a, b, c, d, e, f, g, index)
        else:
            revocations[b] = _RevocationRow(a, b, index)
    return subjects, grants, revocations


class RowChecks:
    """The rows' check, mixed into :class:`~consentry.registry.consent.ConsentState`
    (which provides the followed facts, its lock and ``refresh``)."""

    registry: Registry
    subjects: dict[str, SignedSubject]
    grants: dict[str, SignedGrant]
    revoked: dict[str, int]
    _lock: threading.RLock
    _size: int
    _by_subject: dict[str, list[str]]

    def refresh(self, session: Session | Connection | None = None) -> int:
        raise NotImplementedError  # ConsentState.refresh

    def check_rows(self, subjects: Iterable[str]) -> None:
        """Check the cached rows of ``subjects`` (their subject rows, grant rows and
        revocation rows) against the signed facts; LogIntegrityError on a mismatch.

        Rows decide nothing (the facts do); this names tampering where the gate
        would otherwise refuse or allow silently. Read order makes it race-free:
        S0 = the size followed so far (every entry below it was committed before
        the rows are read, and its rows with it), then the rows, judged on the facts
        (:meth:`_judge_rows`); only if they do not explain a row, a refresh that
        starts after the rows' read (an entry commits with its rows, so every row
        read is of an entry the refresh follows) and a second, final judgement.
        Every entry below S0 must have its row. All the rows in ONE statement on the
        cursor (``raw_sql``), outside any transaction (one snapshot, one round trip), no
        query for the log's size: a caller that wants S0 to be the log's
        size now refreshes first (``grant_facts`` does, and the gateway's one refresh
        per job).

        Lock order: the connection is returned to the pool before the refresh takes
        the state's lock. Never wait for that lock holding a pooled connection: the
        lock's holder may need one to read the tail, and on PostgreSQL (one pool of
        15 for a process's readers and its writer) 15 checks holding one each while
        waiting for the lock starved it until the pool's 30 s timeout.
        """
        wanted = sorted(set(subjects))
        if not wanted:
            self.refresh()
            return
        with self._lock:
            before = self._size
            signed_ids = {g for s in wanted for g in self._by_subject.get(s, ())}
        with self.registry.db.read_one() as connection:  # one statement: one snapshot
            rows = _read_rows(connection, wanted, sorted(signed_ids))
        try:  # first against the facts as followed: they explain the rows nearly always
            self._judge_rows(wanted, before, rows)
        except LogIntegrityError:
            # a row of an entry committed since S0 looks forged until followed: refresh
            # (after the rows' read, their connection back in the pool) and judge again
            self.refresh()
            self._judge_rows(wanted, before, rows)

    def _judge_rows(
        self,
        wanted: list[str],
        before: int,
        rows: _Rows,
    ) -> None:
        """The verdict of :meth:`check_rows` on rows read after S0 = ``before``.

        Judged on the facts followed so far (which hold every entry below S0), only
        entries below S0 are required to have rows; a grant row the facts do not
        explain raises. Following more entries can only explain more rows (one of a
        grant at S0 or later), never fail one that passed: so a pass before the
        refresh is the verdict the refreshed facts would give."""
        subject_rows, grant_rows, revocation_rows = rows
        unexplained = dict(grant_rows)
        with self._lock:
            for subject_id in wanted:
                self._check_subject_row(subject_id, subject_rows.get(subject_id), before)
                for grant_id in self._by_subject.get(subject_id, ()):
                    grant = self.grants[grant_id]
                    if grant.index < before:
                        self._check_grant_row(grant, unexplained.pop(grant_id, None))
                        self._check_revocation_row(grant, revocation_rows.get(grant_id), before)
                    else:
                        unexplained.pop(grant_id, None)
            for row in unexplained.values():
                signed = self.grants.get(row.id)
                raise LogIntegrityError(
                    f"grant {row.id}: its row names subject {row.subject_id}, but "
                    + (
                        "the signed log has no such grant (forged row)"
                        if signed is None
                        else f"the signed grant is of subject {signed.subject} (re-pointed row)"
                    )
                )

    def _check_subject_row(self, subject_id: str, row: _SubjectRow | None, before: int) -> None:
        signed = self.subjects.get(subject_id)
        if signed is None or signed.index >= before:
            return  # a face or name of no signed subject involves nobody
        if row is None:
            raise LogIntegrityError(f"subject {subject_id}: its row is missing (deleted)")
        fields = [
            name
            for name, cached, truth in (
                ("display_name", row.display_name, signed.display_name),
                ("aliases", tuple(row.aliases), signed.aliases),
                ("public_key", row.public_key, signed.public_key),
                ("log_index", row.log_index, signed.index),
            )
            if cached != truth
        ]
        if fields:
            raise LogIntegrityError(
                f"subject {subject_id}: its row differs from the signed log in {', '.join(fields)}"
            )

    @staticmethod
    def _check_grant_row(grant: SignedGrant, row: _GrantRow | None) -> None:
        if row is None:
            raise LogIntegrityError(f"grant {grant.id}: its row is missing (deleted)")
        fields = [
            name
            for name, cached, truth in (
                ("subject", row.subject_id, grant.subject),
                ("grantee", row.grantee_id, grant.grantee),
                ("purposes", tuple(row.purposes), grant.purposes),
                ("priors", tuple(row.priors), grant.priors),
                ("not_before", row.not_before, grant.not_before),
                ("not_after", row.not_after, grant.not_after),
                ("log_index", row.log_index, grant.index),
            )
            if cached != truth
        ]
        if fields:
            raise LogIntegrityError(
                f"grant {grant.id}: its row differs from the signed log in {', '.join(fields)}"
            )

    def _check_revocation_row(
        self, grant: SignedGrant, row: _RevocationRow | None, before: int
    ) -> None:
        revoked = self.revoked.get(grant.id)
        if revoked is not None and revoked < before and row is None:
            raise LogIntegrityError(
                f"grant {grant.id}: the signed log revokes it at index {revoked}, "
                "but the revocation row is missing (deleted)"
            )
        if row is not None and revoked is None:
            raise LogIntegrityError(
                f"grant {grant.id}: a revocation row {row.id} has no signed log entry (forged row)"
            )
        if row is not None and revoked is not None and row.log_index != revoked:
            raise LogIntegrityError(
                f"grant {grant.id}: its revocation row claims log index {row.log_index}, "
                f"the signed log {revoked}"
            )
