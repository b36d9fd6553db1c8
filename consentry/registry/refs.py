"""How a person on the command line names a registry row: subjects by id, display
name or alias; priors by id or SHA-256.

This is reference resolution, not a consent decision: it reads the rows (the
decision path judges by the signed log, see :mod:`consentry.registry.consent`).

Invariants
- An exact id always wins.
- Otherwise the reference must name exactly one row: a subject whose display name
  or one of whose aliases equals it (both counted together, so a string that is one
  subject's name and another's alias is ambiguous), a prior whose SHA-256 equals it.
- No match is a :class:`~consentry.errors.NotFoundError` (for a job's prior: the
  reference is passed on unchanged, so the gateway logs the refusal); more than one
  an :class:`~consentry.errors.AmbiguousNameError`; nothing is guessed.
"""

from __future__ import annotations

import json

from sqlalchemy import bindparam
from sqlmodel import Session, col, or_, select

from consentry.errors import AmbiguousNameError, NotFoundError
from consentry.registry.models import Prior, Subject

__all__ = ["find_subject", "prior_id_of", "prior_sha256_of"]

_SUBJECT_BY_ID = select(*Subject.__table__.columns).where(  # type: ignore[attr-defined]
    Subject.__table__.c.id == bindparam("id")  # type: ignore[attr-defined]
)


def find_subject(session: Session, ref: str) -> Subject:
    """The subject ``ref`` names: its id, else its unique display name or alias."""
    found = session.execute(_SUBJECT_BY_ID, {"id": ref}).first()
    if found is not None:
        return Subject(**found._asdict())
    # the alias column holds a JSON list: narrow by substring, then compare exactly
    candidates = session.exec(
        select(Subject).where(
            or_(Subject.display_name == ref, col(Subject.aliases_json).contains(json.dumps(ref)))
        )
    )
    matches = [row for row in candidates if row.display_name == ref or ref in row.aliases]
    if not matches:
        raise NotFoundError(f"no subject {ref!r}", hint="see 'consentry subject list'")
    if len(matches) > 1:
        raise AmbiguousNameError(
            f"{len(matches)} subjects are named {ref!r} (by name or alias)", hint="use the id"
        )
    return matches[0]


def _prior(session: Session, ref: str) -> Prior:
    by_id = session.get(Prior, ref)
    if by_id is not None:
        return by_id
    matches = list(session.exec(select(Prior).where(Prior.sha256 == ref.lower())))
    if not matches:
        raise NotFoundError(
            f"no prior {ref!r} (neither a prior id nor a registered SHA-256)",
            hint="see 'consentry prior list'",
        )
    if len(matches) > 1:
        raise AmbiguousNameError(
            f"{len(matches)} priors have SHA-256 {ref}", hint="give the prior id"
        )
    return matches[0]


def prior_sha256_of(session: Session, ref: str) -> str:
    """The SHA-256 of the prior ``ref`` names (its id or its SHA-256). A 64-hex value
    that no prior has is returned as given: a grant may cover a prior not yet
    registered."""
    if _is_sha256(ref) and session.get(Prior, ref) is None:
        return ref.lower()
    return _prior(session, ref).sha256


def prior_id_of(session: Session, ref: str) -> str:
    """The id of the one prior ``ref`` names (its id or its SHA-256). Anything else is
    returned as given, for the gateway to refuse (and log) as an unknown prior."""
    if not _is_sha256(ref) or session.get(Prior, ref) is not None:
        return ref
    try:
        return _prior(session, ref).id
    except NotFoundError:
        return ref


def _is_sha256(value: str) -> bool:
    return len(value) == 64 and all(c in "0123456789abcdefABCDEF" for c in value)
