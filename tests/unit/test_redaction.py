"""What a grantee may read of a decision: ``redact_reasons`` and ``Receipt.for_grantee``."""

from __future__ import annotations

from consentry.gate import Receipt
from consentry.gate.policy import REGISTERED_PERSON, redact_reasons

HIDDEN = "sub_" + "a" * 20
SHOWN = "sub_" + "b" * 20
ME = "gte_" + "1" * 20
OTHER = "gte_" + "2" * 20
MY_GRANT = "grt_" + "3" * 20
THEIR_GRANT = "grt_" + "4" * 20

REASONS = (
    f"input image 0 face 0 shows subject {HIDDEN}",
    f"no active grant for subject {HIDDEN} (grantee {ME}, purpose restore)",
    f"grant {THEIR_GRANT} for subject {HIDDEN} is for another grantee ({OTHER})",
    f"grant {MY_GRANT} for subject {SHOWN} does not cover purpose restore (covers generate)",
    "refused: prior pri_x is of subject Barack Obama, who was erased",
)


def test_hidden_subjects_become_a_registered_person_and_other_grants_vanish() -> None:
    lines = redact_reasons(REASONS, ME, {SHOWN}, {MY_GRANT}, ["Barack Obama", "Obama"])
    text = "\n".join(lines)
    assert HIDDEN not in text and "Obama" not in text
    assert THEIR_GRANT not in text and OTHER not in text
    assert f"input image 0 face 0 shows {REGISTERED_PERSON}" in lines
    assert f"no active grant for {REGISTERED_PERSON} (grantee {ME}, purpose restore)" in lines
    assert REASONS[3] in lines  # the grantee's own grant, of a subject it knows: unchanged
    # nothing hidden: the lines come back unchanged, bar the one naming another grantee
    everything = redact_reasons(REASONS, ME, {SHOWN, HIDDEN}, {MY_GRANT, THEIR_GRANT})
    assert everything == (REASONS[0], REASONS[1], REASONS[3], REASONS[4])


def test_a_refusal_never_loses_every_reason() -> None:
    only_theirs = (f"grant {THEIR_GRANT} for subject {HIDDEN} is revoked",)
    lines = redact_reasons(only_theirs, ME, set(), set())
    assert len(lines) == 1 and REGISTERED_PERSON in lines[0] and HIDDEN not in lines[0]
    assert redact_reasons((), ME, set(), set()) == ()


def test_receipt_for_grantee_redacts_subjects_faces_and_grants() -> None:
    receipt = Receipt(
        False,
        REASONS[:2],
        "dec_1",
        7,
        grants=(MY_GRANT, THEIR_GRANT),
        subjects=(SHOWN, HIDDEN),
        faces=[{"image": 0, "bbox": [1, 2, 3, 4], "subjects": [HIDDEN, SHOWN]}],
    )
    view = receipt.for_grantee(ME, {SHOWN}, {MY_GRANT})
    assert view.subjects == (SHOWN, REGISTERED_PERSON) and view.grants == (MY_GRANT,)
    assert view.faces == [
        {"image": 0, "bbox": [1, 2, 3, 4], "subjects": [REGISTERED_PERSON, SHOWN]}
    ]
    assert HIDDEN not in str(view.to_json()) and view.decision_id == "dec_1"
    assert receipt.subjects == (SHOWN, HIDDEN)  # the original is unchanged
