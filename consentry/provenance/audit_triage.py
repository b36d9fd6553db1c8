"""Severity and recommended action of audit results, for a trust-and-safety reviewer.

Invariants
- Pure functions of an audit item's recorded fields: the same item always gets the
  same severity and action, in the JSON and the HTML report alike.
- ``high``: a registered subject's face, matched with certainty, without valid
  provenance for that subject (and a file with such a finding).
- ``medium``: needs a person's eye: an *uncertain* match (the face scores in the
  review band below the match threshold, or is not clearly one person: see
  :mod:`consentry.identity.second_stage`), and a file whose findings are all
  uncertain; or the file could not be audited (unreadable, not an allowed image,
  over the face cap), or its manifest is invalid or not signed by this registry's
  chain, or its consent check failed.
- ``low``: no manifest and no registered face: nothing to act on.
- ``info``: valid provenance (Trusted and consent holds, or recovered from its marks).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RANK", "SEVERITIES", "Triage", "triage_finding", "triage_item"]

SEVERITIES = ("high", "medium", "low", "info")
"""Most to least severe."""
RANK = {name: len(SEVERITIES) - i for i, name in enumerate(SEVERITIES)}
"""Sort key: higher is more severe (high 4 ... info 1)."""


@dataclass(frozen=True)
class Triage:
    severity: str  # one of SEVERITIES
    action: str  # what the reviewer should do, one sentence


def _consent_failed(consent: str) -> bool:
    return consent.startswith("failed")


def triage_finding(manifest_state: str, consent: str, certain: bool = True) -> Triage:
    """A registered face lacking valid provenance in a file whose manifest is
    ``manifest_state`` and consent ``consent`` (as :class:`AuditItem` records them);
    ``certain``: the match is certain (not in the review band, not ambiguous)."""
    if not certain:
        return Triage(
            "medium",
            "Review by eye before acting: the face may be this subject (its score is in "
            "the review band, or it is not clearly one person); if it is, treat it as a "
            "high finding.",
        )
    if manifest_state == "none" and consent != "recovered":
        action = (
            "Take down or hold: no provenance at all; publish only a release made "
            "through the Consentry gateway with this subject's consent."
        )
    elif manifest_state == "valid_untrusted":
        action = (
            "Hold: the manifest is signed outside this registry's chain; confirm the "
            "subject's consent with the signer or take it down."
        )
    elif manifest_state == "invalid":
        action = (
            "Take down and investigate: the manifest is broken or was tampered with, "
            "so nothing vouches for this subject's consent."
        )
    elif _consent_failed(consent):
        action = (
            "Take down: the consent behind this release does not hold "
            "(revoked, expired, or not an allow)."
        )
    else:
        action = (
            "Take down or obtain this subject's consent: the valid provenance "
            "covers other subjects only."
        )
    return Triage("high", action)


def triage_item(
    error: str, manifest_state: str, consent: str, findings: int, certain: int | None = None
) -> Triage:
    """A whole file: its worst finding, else what its manifest and consent say.
    ``findings``: how many; ``certain``: how many of them are certain (None: all)."""
    if error:
        return Triage(
            "medium",
            "Review by hand: the file could not be audited (unreadable, not an allowed "
            "image, or over the face cap); re-export it as JPEG, PNG, WebP or TIFF and "
            "audit again.",
        )
    if findings:
        sure = findings if certain is None else certain
        return triage_finding(manifest_state, consent, certain=sure > 0)
    if manifest_state in ("invalid", "valid_untrusted"):
        return Triage(
            "medium",
            "Check its origin: the manifest is "
            + ("invalid" if manifest_state == "invalid" else "not signed by this registry")
            + ", though no registered face was found.",
        )
    if _consent_failed(consent):
        return Triage(
            "medium",
            "Check the release: its consent check failed, though no registered face was found.",
        )
    if manifest_state == "none" and consent != "recovered":
        return Triage("low", "No action: no provenance, and no registered face was found.")
    return Triage("info", "No action: the provenance is valid.")
