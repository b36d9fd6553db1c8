"""A grantee's API key rotated or the grantee disabled, as signed log entries
(kind ``grantee-key``, :class:`~consentry.registry.models.GranteeKeyChange`).

Invariants
- The log stays the source of truth for authentication: the key that opens a
  grantee is the one whose hash its newest signed ``grantee-key`` rotation carries,
  else the one its own signed entry carries; after a signed ``disable`` none does
  (:attr:`SignedGrantee.key_sha256`, read by ``Registry.authenticate_grantee``).
  The grantee's row is never edited: it still matches its own signed entry.
- Disabling is final: a disabled grantee is neither rotated nor disabled again
  (checked in the write transaction; a raw append of one changes nothing here:
  the first ``disable`` stands).
- The new API key is returned once and stored only as its hash, in the log.
- A process that authenticates from its followed state honours a change signed by
  another process once it follows the log past it (its follow interval); the
  process that signs it refreshes at once.
"""

from __future__ import annotations

import dataclasses
import secrets
from typing import TYPE_CHECKING, Any

from sqlmodel import Session, col, select

from consentry.errors import InputError, RegistryError
from consentry.hashing import sha256_hex
from consentry.registry.consent_facts import SignedGrantee
from consentry.registry.models import GranteeKeyChange
from consentry.registry.statements import format_time

if TYPE_CHECKING:
    from consentry.registry.store import Registry

__all__ = ["GranteeKeyFollower", "disable_grantee", "is_disabled", "rotate_grantee_key"]

ACTIONS = ("rotate", "disable")


class GranteeKeyFollower:
    """Mixin of :class:`~consentry.registry.consent.ConsentState`: folds verified
    ``grantee-key`` leaves into its signed grantees."""

    grantees: dict[str, SignedGrantee]
    _key_map: tuple[object, int, dict[str, SignedGrantee]]

    def _on_grantee_key(self, index: int, record_id: str, s: dict[str, Any]) -> None:
        signed = self.grantees.get(str(s.get("grantee")))
        if signed is None or signed.disabled is not None or s.get("action") not in ACTIONS:
            return
        if s.get("action") == "disable":
            changed = dataclasses.replace(signed, disabled=index)
        else:
            changed = dataclasses.replace(signed, rotated_sha256=str(s.get("api_key_sha256")))
        self.grantees[signed.id] = changed
        self._key_map = (None, 0, {})  # the key -> grantee map changed: rebuilt on next use


def is_disabled(session: Session, grantee_id: str) -> bool:
    found = session.exec(
        select(GranteeKeyChange).where(
            col(GranteeKeyChange.grantee_id) == grantee_id, GranteeKeyChange.action == "disable"
        )
    ).first()
    return found is not None


def _change(registry: Registry, ref: str, action: str, key_sha256: str | None,
            reason: str) -> GranteeKeyChange:  # fmt: skip
    grantee = registry.get_grantee(ref)
    row = GranteeKeyChange(
        id=registry.new_id("gkc"),
        grantee_id=grantee.id,
        action=action,
        api_key_sha256=key_sha256,
        reason=reason.strip(),
        created_at=format_time(registry.now()),
        log_index=-1,
    )
    with registry.db.write() as session:
        if is_disabled(session, grantee.id):
            raise RegistryError(f"grantee {grantee.id} is disabled: that is final")
        registry.log.record(session, row, ())
    registry.consent.refresh()  # this process honours the change at once
    return row


def rotate_grantee_key(
    registry: Registry, ref: str, reason: str = ""
) -> tuple[GranteeKeyChange, str]:
    """Give grantee ``ref`` a new API key (returned once); the old one stops working."""
    api_key = "csk_" + secrets.token_urlsafe(32)
    return _change(registry, ref, "rotate", sha256_hex(api_key.encode()), reason), api_key


def disable_grantee(registry: Registry, ref: str, reason: str) -> GranteeKeyChange:
    """Disable grantee ``ref``: no API key authenticates it from then on (final)."""
    if not reason.strip():
        raise InputError("disabling a grantee needs a reason (it is signed into the log)")
    return _change(registry, ref, "disable", None, reason)
