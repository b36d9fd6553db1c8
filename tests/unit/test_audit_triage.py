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


@pytest.mark.parametrize("state", ["none", "valid_untrusted", "invalid", "trusted"])
def test_an_uncertain_match_is_a_reviewers_call_not_a_takedown(state: str) -> None:
    """A face in the review band (or not clearly one person) is medium with a review
    action, whatever the manifest; a file is high as soon as one finding is certain."""
    unsure = triage_finding(state, "none", certain=False)
    assert unsure.severity == "medium" and unsure.action.startswith("Review by eye")
    assert triage_item("", state, "none", 2, certain=0) == unsure
    assert triage_item("", state, "none", 2, certain=1) == triage_finding(state, "none")
    assert triage_item("", state, "none", 2).severity == "high"  # no count given: all certain


def test_the_report_carries_each_findings_certainty_into_its_severity() -> None:
    from consentry.provenance.audit import AuditItem, AuditReport, Finding

    sure = Finding("sub_1", "Ada", 0.61, [0, 0, 1, 1], "no provenance")
    unsure = Finding("sub_2", "Bea", 0.33, [2, 2, 1, 1], "no provenance", certain=False)
    report = AuditReport(
        [
            AuditItem(path="both.jpg", manifest_state="none", consent="none",
                      findings=[sure, unsure]),
            AuditItem(path="unsure.jpg", manifest_state="none", consent="none",
                      findings=[unsure]),
        ]
    )  # fmt: skip
    both, only_unsure = report.to_json()["items"]
    assert [f["severity"] for f in both["findings"]] == ["high", "medium"]
    assert [f["certain"] for f in both["findings"]] == [True, False]
    assert both["severity"] == "high"
    assert only_unsure["severity"] == "medium"
    assert only_unsure["action"].startswith("Review by eye")
    assert report.to_json()["by_severity"] == {"high": 1, "medium": 1, "low": 0, "info": 0}


def test_the_html_marks_an_uncertain_match_and_only_that() -> None:
    from consentry.provenance.audit import AuditItem, AuditReport, Finding, render_html

    sure = Finding("sub_1", "Ada", 0.61, [0, 0, 1, 1], "no provenance")
    unsure = Finding("sub_2", "Bea", 0.33, [2, 2, 1, 1], "no provenance", certain=False)
    page = render_html(
        AuditReport([AuditItem(path="a.jpg", manifest_state="none", findings=[sure, unsure])])
    )
    assert page.count("uncertain match: review by eye") == 1
    marked = page.index("uncertain match: review by eye")
    assert page.rindex("0.330", 0, marked) > page.rindex("0.610", 0, marked)  # Bea's cell

