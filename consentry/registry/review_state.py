"""Holds and reviews as the consent follower keeps them (issue 14).

:class:`ReviewFollower` is a mixin of :class:`~consentry.registry.consent.ConsentState`:
the follower hands it every decision and review leaf it verified, and it keeps
the held decisions (a decision statement with a ``held`` key) and the first
review of each.

Invariants
- Every value here comes from a leaf the follower verified (signature of the
  operator key, place in the tree); no row is read. A review row without its
  signed entry is therefore no review at all.
- One review per hold: a review naming a decision that is not an earlier hold,
  or a hold already reviewed, changes nothing here (the first verdict stands;
  ``consentry.registry.reviews.record_review`` refuses to write such a review in
  its write transaction, so only a raw append can make one).
- Memory grows with holds and reviews only, never with other decisions.
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass
from typing import Any

__all__ = ["ReviewFollower", "SignedHold", "SignedReview"]

VERDICTS: tuple[str, ...] = ("approve", "reject")


@dataclass(frozen=True)
class SignedHold:
    """A held decision as signed: who asked, for what, on which inputs, and the held
    faces (each a mapping with image, face, bbox, subject, similarity)."""

    id: str
    grantee: str
    purpose: str
    inputs: tuple[str, ...]
    faces: tuple[dict[str, Any], ...]
    band: tuple[float, float]
    time: str
    index: int


@dataclass(frozen=True)
class SignedReview:
    """A review as signed: the held decision, the verdict, who, why, when."""

    id: str
    decision: str
    verdict: str
    reviewer: str
    note: str
    time: str
    index: int


class ReviewFollower:
    """The holds and reviews part of the consent state (see the module doc)."""

    _lock: threading.RLock
    holds: dict[str, SignedHold]
    reviews: dict[str, SignedReview]  # held decision id -> its (first) review

    def _reset_reviews(self) -> None:
        self.holds = {}
        self.reviews = {}

    def _on_decision(self, index: int, record_id: str, s: dict[str, Any]) -> None:
        held = s.get("held")
        if not isinstance(held, dict):
            return
        band = held.get("band") or (0.0, 0.0)
        self.holds[record_id] = SignedHold(
            record_id,
            str(s.get("grantee")),
            str(s.get("purpose")),
            tuple(str(v) for v in s.get("inputs") or ()),
            tuple(dict(f) for f in held.get("faces") or () if isinstance(f, dict)),
            (float(band[0]), float(band[1])),
            str(s.get("time")),
            index,
        )

    def _on_review(self, index: int, record_id: str, s: dict[str, Any]) -> None:
        decision = str(s.get("decision"))
        verdict = str(s.get("verdict"))
        if decision not in self.holds or decision in self.reviews or verdict not in VERDICTS:
            return  # not a review of a pending hold: the first verdict stands
        self.reviews[decision] = SignedReview(
            record_id,
            decision,
            verdict,
            str(s.get("reviewer")),
            str(s.get("note")),
            str(s.get("time")),
            index,
        )

    def pending_holds(self) -> list[SignedHold]:
        """The holds no review has judged yet, oldest first."""
        with self._lock:
            return [h for h in self.holds.values() if h.id not in self.reviews]

    def hold_and_review(self, decision_id: str) -> tuple[SignedHold | None, SignedReview | None]:
        """The signed hold ``decision_id`` and its review (each None when absent)."""
        with self._lock:
            return self.holds.get(decision_id), self.reviews.get(decision_id)

    # ------------------------------------------------------------------ snapshot
    def _reviews_body(self) -> dict[str, Any]:
        return {
            "holds": [dataclasses.asdict(h) for h in self.holds.values()],
            "reviews": [dataclasses.asdict(r) for r in self.reviews.values()],
        }

    def _restore_reviews(self, body: dict[str, Any]) -> None:
        """From a snapshot (one an older release wrote has neither key: nothing held)."""
        for v in body.get("holds", ()):
            hold = SignedHold(
                **{
                    **v,
                    "inputs": tuple(v["inputs"]),
                    "faces": tuple(v["faces"]),
                    "band": tuple(v["band"]),
                }
            )
            self.holds[hold.id] = hold
        for v in body.get("reviews", ()):
            self.reviews[v["decision"]] = SignedReview(**v)
