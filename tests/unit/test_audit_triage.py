"""Severity and recommended action of audit results (``consentry.provenance.audit_triage``)."""

from __future__ import annotations

import pytest

from consentry.provenance.audit_triage import RANK, SEVERITIES, triage_finding, triage_item


@pytest.mark.parametrize(
    ("state", "consent", "words"),
    [
        ("none", "none", "no provenance"),
        ("valid_untrusted", "failed: untrusted", "outside this registry's chain"),
        ("invalid", "failed: bad signature", "tampered"),
        ("trusted", "failed: grant revoked", "does not hold"),
        ("trusted", "ok", "covers other subjects only"),
        ("none", "recovered", "covers other subjects only"),  # a stripped release of others
    ],
)
def test_every_finding_is_high_with_the_action_for_its_provenance(
    state: str, consent: str, words: str
) -> None:
    triage = triage_finding(state, consent)
    assert triage.severity == "high" and words in triage.action
    assert triage_item("", state, consent, 1) == triage  # the file: its finding's


@pytest.mark.parametrize(
    ("error", "state", "consent", "severity"),
    [
        ("broken.jpg: not an image", "", "", "medium"),
        ("too many faces: 36 (limit is 32)", "", "", "medium"),
        ("", "invalid", "failed: x", "medium"),
        ("", "valid_untrusted", "failed: x", "medium"),
        ("", "trusted", "failed: revoked", "medium"),
        ("", "none", "none", "low"),
        ("", "none", "recovered", "info"),
        ("", "trusted", "ok", "info"),
    ],
)
def test_a_file_without_findings(error: str, state: str, consent: str, severity: str) -> None:
    triage = triage_item(error, state, consent, 0)
    assert triage.severity == severity and triage.action
    assert (severity == "medium") == (not triage.action.startswith("No action"))


def test_ranks_order_the_severities() -> None:
    assert sorted(SEVERITIES, key=RANK.__getitem__, reverse=True) == list(SEVERITIES)
    assert SEVERITIES[0] == "high" and SEVERITIES[-1] == "info"
