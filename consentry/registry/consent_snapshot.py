"""The consent state's sealed snapshot: its facts as JSON, and back.

What is sealed, where and when is :class:`~consentry.registry.consent.ConsentState`'s
(``_save_snapshot``, ``_load_snapshot``): this module only turns the followed facts
into the snapshot's body and a body back into facts. Invariant: ``restore_body(s,
snapshot_body(t))`` gives ``s`` the facts of ``t``.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from consentry.registry import consent_facts as facts
from consentry.registry.signing import public_key_from_hex, public_key_hex

if TYPE_CHECKING:
    from consentry.registry.consent import ConsentState

__all__ = ["restore_body", "snapshot_body"]


def snapshot_body(state: ConsentState) -> dict[str, Any]:
    """The followed facts of ``state`` as the snapshot's JSON body."""
    checker = state._checker
    return {
        "size": state._size,
        "root": state._frontier.root.hex(),
        "frontier": state._frontier.to_json(),
        "checker": {
            "keys": {k: public_key_hex(v) for k, v in checker.keys.items()},
            "active_key": checker.active_key,
            "subject_keys": checker.subject_keys,
            "grant_subject": checker.grant_subject,
            "grantees": sorted(checker.grantees),
            "erased": sorted(checker.erased),
            "opted_out": sorted(checker.opted_out),
            "key_span": checker.key_span,
            "rotations": checker.rotations,
        },
        "subjects": [dataclasses.asdict(v) for v in state.subjects.values()],
        "grantees": [dataclasses.asdict(v) for v in state.grantees.values()],
        "grants": [dataclasses.asdict(v) for v in state.grants.values()],
        "revoked": state.revoked,
        "priors": [dataclasses.asdict(v) for v in state.priors.values()],
        "erased": state.erased,
        "opted_out": state.opted_out,
        "thresholds": state.thresholds,
        "events": [dataclasses.asdict(e) for e in state._events],
        **state._reviews_body(),
    }


def restore_body(state: ConsentState, body: dict[str, Any]) -> None:
    """Load the facts of a sealed snapshot ``body`` (as :func:`snapshot_body` made it)
    into ``state``, which has just been reset; raises on a malformed body."""
    c = body["checker"]
    checker = state._checker
    checker.keys = {k: public_key_from_hex(v) for k, v in c["keys"].items()}
    checker.active_key = c["active_key"]
    checker.subject_keys = dict(c["subject_keys"])
    checker.grant_subject = dict(c["grant_subject"])
    checker.grantees = set(c["grantees"])
    checker.erased = set(c["erased"])
    checker.opted_out = set(c["opted_out"])
    checker.key_span = {
        k: (int(a), None if b is None else int(b)) for k, (a, b) in c["key_span"].items()
    }
    checker.rotations = {k: (int(a), str(b)) for k, (a, b) in c["rotations"].items()}
    for v in body["subjects"]:
        state.subjects[v["id"]] = facts.SignedSubject(**{**v, "aliases": tuple(v["aliases"])})
        state._newest_subject = max(state._newest_subject, int(v["index"]))
    for v in body["grantees"]:
        state.grantees[v["id"]] = facts.SignedGrantee(**v)
        state._grantees_named.setdefault(v["name"], []).append(v["id"])
    for v in sorted(body["grants"], key=lambda g: int(g["index"])):
        grant = facts.SignedGrant(
            **{**v, "purposes": tuple(v["purposes"]), "priors": tuple(v["priors"])}
        )
        state.grants[grant.id] = grant
        state._by_subject.setdefault(grant.subject, []).append(grant.id)
        for sha in grant.priors:
            state._by_prior.setdefault(sha, []).append(grant.id)
    state.revoked = {str(k): int(v) for k, v in body["revoked"].items()}
    for v in body["priors"]:
        state.priors[v["id"]] = facts.SignedPrior(**v)
        state._priors_of_sha.setdefault(v["sha256"], []).append(v["id"])
    state.erased = {str(k): int(v) for k, v in body["erased"].items()}
    state.opted_out = {str(k): int(v) for k, v in body["opted_out"].items()}
    state.thresholds = {str(k): float(v) for k, v in body["thresholds"].items()}
    state._restore_reviews(body)
    for e in body["events"]:
        enrollment = None
        if e.get("enrollment") is not None:
            raw = e["enrollment"]
            enrollment = facts.SignedEnrollment(
                raw["id"], raw["subject"], raw["engine"],
                tuple(facts.SignedBlob(**b) for b in raw["blobs"]), int(raw["index"]),
            )  # fmt: skip
            state.enrollments[enrollment.id] = enrollment
        state._event(facts.BiometricEvent(**{**e, "enrollment": enrollment}))
