"""The JSON request bodies of the admin routes (pydantic; a body that does not
validate is a 422 ``invalid_request`` before the route runs)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from consentry.registry.statements import PURPOSES

__all__ = ["EraseIn", "GrantIn", "RevokeIn", "SubjectIn"]


class GrantIn(BaseModel):
    subject: str = Field(description="Subject id or unique name.")
    grantee: str = Field(description="Grantee id or unique name.")
    purposes: list[str] = Field(description=f"Some of: {', '.join(PURPOSES)}.")
    until: str | None = Field(default=None, description="End, ISO 8601.")
    not_before: str | None = Field(default=None, description="Start, ISO 8601 (default now).")
    priors: list[str] = Field(default_factory=list, description="SHA-256 of covered priors.")


class RevokeIn(BaseModel):
    reason: str


class PrepareGrantIn(GrantIn):
    """A grant for the subject to sign on their own device (``consentry sign``)."""

    sign_within_days: float = Field(default=7.0, description="Days to sign (max 30).")


class PrepareRevocationIn(BaseModel):
    """A revocation for the subject to sign: needs no key; the statement names only
    the grant."""

    grant: str = Field(description="The grant to revoke.")
    subject: str = Field(
        description=(
            "Your subject id: the grant must be yours. Another subject's grant answers "
            "404, exactly as an unknown grant does."
        )
    )
    reason: str = Field(description="Why; recorded in the public log.")
    sign_within_days: float = Field(default=1.0, description="Days to sign (max 30).")


class EnvelopeIn(BaseModel):
    """A DSSE envelope, as ``consentry sign`` writes it."""

    payloadType: str  # noqa: N815  (the DSSE field name)
    payload: str = Field(description="Base64 of the canonical statement.")
    signatures: list[dict[str, str]] = Field(description="[{keyid, sig}], sig in base64.")


class SubjectIn(BaseModel):
    name: str = Field(description="Display name.")
    aliases: list[str] = Field(default_factory=list, description="Names a prompt may use.")


class EraseIn(BaseModel):
    """Erasure and opt-out are final: ``confirm`` must be true (the CLI's ``--yes``)."""

    reason: str
    confirm: bool = False
