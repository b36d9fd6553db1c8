"""What a grantee may read of the registry: receipt and audit redaction.

Invariants
- A receipt sent to a grantee is :meth:`Receipt.for_grantee`: every subject the
  grantee holds no grant from is "a registered person" (reasons, subjects, faces)
  and other grantees' grants are not mentioned; the logged decision keeps the ids.
- In an audit a grantee sees, for every subject it holds no grant from, a
  pseudonym of its own (HMAC of grantee and subject under a key derived from the
  master key): never a name or id, and two grantees' pseudonyms of one person
  differ. The admin sees the audit as it is.
- A view holds grants in every state (grants are append-only), so a cached view
  is whole while the log holds as many grants as when it was read.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import typing
from collections.abc import Iterable
from typing import Any

from consentry.errors import ConsentryError
from consentry.gate import Receipt
from consentry.gate.policy import REGISTERED_PERSON, redact_reasons
from consentry.registry.store import Registry

__all__ = ["GranteeView", "audit_for_grantee", "job_json"]


class GranteeView(typing.NamedTuple):
    """What one grantee may see of the registry: the subjects it holds a grant
    from (any state: it learnt their ids from that grant) and its grants."""

    requester: str
    visible: frozenset[str]
    grants: frozenset[str]

    @classmethod
    def of(cls, registry: Registry, grantee_id: str) -> GranteeView:
        rows = registry.list_grants(grantee=grantee_id)
        return cls(
            grantee_id,
            frozenset(g.subject_id for g, _ in rows),
            frozenset(g.id for g, _ in rows),
        )

    def hidden_names(
        self, registry: Registry, subjects: Iterable[object], *, rows: bool = True
    ) -> list[str]:
        """Display names and aliases of the hidden subjects among ``subjects``: as the
        signed log holds them (the consent state, no database read), and with
        ``rows`` also as their rows say (an audit's text quotes the rows' names). A
        subject the followed log does not hold is looked up by its row."""
        state = registry.consent
        names: list[str] = []
        for subject in dict.fromkeys(str(s) for s in subjects):
            if subject in self.visible or not subject.startswith("sub_"):
                continue
            signed = state.subjects.get(subject)
            if signed is not None:
                names += [signed.display_name, *signed.aliases]
                if not rows:
                    continue
            try:
                row = registry.get_subject(subject)
            except ConsentryError:
                continue
            names += [row.display_name, *row.aliases]
        return names

    def receipt(self, registry: Registry, receipt: Receipt) -> Receipt:
        involved: list[object] = list(receipt.subjects)
        for face in receipt.faces:
            involved += list(typing.cast(list[object], face.get("subjects", [])))
        names = self.hidden_names(registry, involved, rows=False)  # reasons quote signed facts
        return receipt.for_grantee(self.requester, self.visible, self.grants, names)

    def pseudonym(self, registry: Registry, subject_id: str) -> str:
        """A stable name for a hidden subject, for this grantee only: HMAC-SHA256
        of (grantee, subject) under a key derived from the registry's master key,
        so two grantees' pseudonyms of one person differ and neither matches the
        pseudonyms signed into C2PA media."""
        key = registry.master_key.derive("grantee-pseudonym")
        message = f"{self.requester}\n{subject_id}".encode()
        return "person_" + hmac.new(key, message, hashlib.sha256).hexdigest()[:20]


def audit_for_grantee(
    registry: Registry, view: GranteeView, result: dict[str, Any]
) -> dict[str, Any]:
    """An audit item as a grantee may read it: every subject it holds no grant
    from as its per-grantee pseudonym, named "a registered person"; free-text
    fields redacted like a receipt's reasons."""
    findings: list[dict[str, Any]] = result["findings"]
    involved = [f["subject_id"] for f in findings] + list(result["provenance_subjects"])
    names = view.hidden_names(registry, involved)

    def text(value: str) -> str:
        if not value:
            return value
        return "; ".join(redact_reasons([value], view.requester, view.visible, view.grants, names))

    def shown(subject: str) -> str:
        return subject if subject in view.visible else view.pseudonym(registry, subject)

    for finding in findings:
        if finding["subject_id"] not in view.visible:
            finding["name"] = REGISTERED_PERSON
        finding["subject_id"] = shown(finding["subject_id"])
        finding["reason"] = text(finding["reason"])
    result["provenance_subjects"] = [shown(s) for s in result["provenance_subjects"]]
    result["consent"] = text(result["consent"])
    result["error"] = text(result["error"])
    return result


def job_json(receipt: Receipt) -> dict[str, Any]:
    """A job receipt with its released outputs inlined as base64 signed PNGs."""
    outputs = [
        {
            "media_type": "image/png",
            "sha256": hashlib.sha256(data).hexdigest(),
            "data_base64": base64.b64encode(data).decode("ascii"),
        }
        for data in receipt.outputs
    ]
    return receipt.to_json() | {"outputs": outputs}
