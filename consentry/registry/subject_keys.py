"""A subject's current key: the one they registered with, or their newest key change.

Invariants
- A key change (:class:`~consentry.registry.models.SubjectKeyChange`, signed log
  kind ``subject-key``) replaces the subject's key for everything after it: the
  old key co-signs nothing more. The log checker enforces it on every entry
  (``LogChecker.subject_keys``); :func:`current_subject_key` reads the newest
  change's row for the registry's own write path, whose entries the checker then
  verifies.
"""

from __future__ import annotations

from sqlmodel import Session, col, select

from consentry.registry.models import SubjectKeyChange

__all__ = ["current_subject_key"]


def current_subject_key(session: Session, subject_id: str) -> str | None:
    """The public key (hex) of the subject's newest key change; None if they made none
    (their registered key, possibly none, is current)."""
    row = session.exec(
        select(SubjectKeyChange)
        .where(SubjectKeyChange.subject_id == subject_id)
        .order_by(col(SubjectKeyChange.log_index).desc())
    ).first()
    return None if row is None else row.new_public_key
