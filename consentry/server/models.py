"""The JSON request bodies of the admin routes (pydantic; a body that does not
validate is a 422 ``invalid_request`` before the route runs).

Input names are the output's names: a subject's ``display_name``, a grant's
``not_after``. The older input names ``name`` and ``until`` are deprecated aliases
(``deprecated: true`` in the OpenAPI schema), still accepted: either name may be
given, or both with the same value; both with different values is a 422. The
aliases are folded into the new name before validation (:func:`_fold_aliases`), so
a route reads only the new name.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from consentry.registry.statements import PURPOSES


def _fold_aliases(data: Any, aliases: dict[str, str]) -> Any:
    """``data`` with each deprecated name (key of ``aliases``) moved to its new name;
    a ValueError (422) when both are given with different values (null is not given)."""
    if not isinstance(data, dict):
        return data  # not an object: pydantic's own error
    folded = dict(data)
    for old, new in aliases.items():
        if old not in folded:
            continue
        value = folded.pop(old)
        if value is None:
            continue  # null: not given
        if folded.get(new) is not None and folded[new] != value:
            raise ValueError(
                f"{old!r} is a deprecated name of {new!r}: give {new!r} only "
                "(both were given, with different values)"
            )
        folded[new] = value
    return folded


__all__ = ["EraseIn", "GrantIn", "RevokeIn", "SubjectIn"]


class GrantIn(BaseModel):
    """A grant; ``until`` is a deprecated alias of ``not_after``."""

    subject: str = Field(description="Subject id or unique name.")
    grantee: str = Field(description="Grantee id or unique name.")
    purposes: list[str] = Field(description=f"Some of: {', '.join(PURPOSES)}.")
    not_after: str | None = Field(default=None, description="End, ISO 8601 (default none).")
    not_before: str | None = Field(default=None, description="Start, ISO 8601 (default now).")
    priors: list[str] = Field(default_factory=list, description="SHA-256 of covered priors.")
    until: str | None = Field(
        default=None,
        deprecated=True,
        exclude=True,
        description="Deprecated name of not_after (the same value, or leave it out).",
    )

    @model_validator(mode="before")
    @classmethod
    def _aliases(cls, data: Any) -> Any:
        return _fold_aliases(data, {"until": "not_after"})


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


def _display_name_or_name(schema: dict[str, Any]) -> None:
    """The schema says what is accepted: ``display_name`` or its deprecated ``name``."""
    schema["required"] = [n for n in schema.get("required", []) if n != "display_name"]
    if not schema["required"]:
        del schema["required"]
    schema["anyOf"] = [{"required": ["display_name"]}, {"required": ["name"]}]


class SubjectIn(BaseModel):
    """A subject; ``name`` is a deprecated alias of ``display_name`` (one of the two
    is required)."""

    model_config = ConfigDict(json_schema_extra=_display_name_or_name)

    display_name: str = Field(description="Display name.")
    aliases: list[str] = Field(default_factory=list, description="Names a prompt may use.")
    name: str | None = Field(
        default=None,
        deprecated=True,
        exclude=True,
        description="Deprecated name of display_name (the same value, or leave it out).",
    )

    @model_validator(mode="before")
    @classmethod
    def _aliases(cls, data: Any) -> Any:
        return _fold_aliases(data, {"name": "display_name"})


class EraseIn(BaseModel):
    """Erasure and opt-out are final: ``confirm`` must be true (the CLI's ``--yes``)."""

    reason: str
    confirm: bool = False
