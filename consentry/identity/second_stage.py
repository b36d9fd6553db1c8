"""The second stage of a match: each candidate against *all* of its subject's photos.

The range search (:meth:`IdentityIndex.search`) finds every subject with one
enrolled vector at or above the review threshold. A look-alike tends to pass on
one photo by chance; the real person resembles most of their photos. So each
candidate found for a face is re-scored by its **support**: the quality-weighted
mean of the best ``SUPPORT_K`` similarities between the face (its best view) and
the subject's enrolled vectors.

Quality weights: each enrolled photo's quality
(:func:`consentry.faces.quality.face_quality`: detector score, face size and
sharpness, in ``(0, 1]``) is signed into its enrollment's blob and weighs its
vector in the support (``IdentityIndex.subject_weights``); photos enrolled
before quality was recorded weigh 1.

Invariants (fail closed; a registered face never becomes "unmatched" here)
- Only with a review band (``review_threshold < threshold``). Without one the
  candidates are returned unchanged: today's behaviour exactly.
- The stage never drops a candidate, never adds one, never changes a
  similarity and never turns an uncertain candidate certain. The only change
  it makes is ``certain`` True -> False: the subject stays involved, as a
  candidate a person reviews (the job is held, never allowed on it).
- **Support rule**: a certain candidate whose support is below the match
  threshold becomes uncertain (one close photo, the others far: a look-alike's
  pattern). A subject with a single enrolled vector has support = the search's
  score, so is never held by this rule. Measured on ``shared/faces``
  (leave-one-out, ``python -m bench fusion``): with SFace at its default
  threshold it holds 9 of the 12 certain impostor candidates and none of the
  117 certain genuine ones; the weaker bar "support below the review threshold"
  held 1 of 12 (look-alikes pass on most of their photos, just less well).
- **Margin rule**: when the best candidate is certain and another candidate
  scores within the margin of it, every certain candidate within the margin of
  the best becomes uncertain: the face is not clearly one person. The margin is
  :data:`MARGIN` times the band's width (``threshold - review_threshold``), so it
  scales with the engine's score spread (normalised dlib cosines are three times
  narrower than SFace's: a fixed 0.03 held 3 of 118 genuine dlib faces and none
  of SFace's).
  Both stay involved (neither is dropped), so neither subject's refusal can be
  sidestepped by the ambiguity; a person decides, and approval still needs the
  grants.
- The result keeps the search's order (best similarity first).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from consentry.errors import InputError

if TYPE_CHECKING:
    from consentry.identity.index import SubjectMatch

__all__ = ["MARGIN", "SUPPORT_K", "confirm", "support"]

#: How many of a subject's best-matching enrolled vectors make the support.
SUPPORT_K = 3
#: A certain best candidate needs a lead over the next one of this fraction of the
#: review band's width (see the margin rule).
MARGIN = 0.5


def support(
    views: np.ndarray, enrolled: np.ndarray, weights: Sequence[float] | None = None
) -> float:
    """Weighted mean of the best ``SUPPORT_K`` similarities of ``enrolled`` (one row
    per enrolled vector) to the face, each vector scored by its best view. No enrolled
    vector, no view or zero weight on the best ``SUPPORT_K``: -1 (no support; fail
    closed: the candidate is held, never dropped)."""
    rows = np.atleast_2d(enrolled)
    faces = np.atleast_2d(views)
    if rows.size == 0 or faces.size == 0:
        return -1.0
    per_vector = (rows @ faces.T).max(axis=1)
    w = np.ones(len(per_vector)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != per_vector.shape or not np.isfinite(w).all() or bool((w < 0).any()):
        raise InputError("support weights: one finite non-negative weight per enrolled vector")
    order = np.argsort(-per_vector, kind="stable")[: min(SUPPORT_K, len(per_vector))]
    if not float(w[order].sum()) > 0.0:
        return -1.0
    return float(np.average(per_vector[order], weights=w[order]))


def confirm(
    views: np.ndarray,
    candidates: Sequence[SubjectMatch],
    vectors_of: Callable[[str], np.ndarray],
    threshold: float,
    review_threshold: float,
    weights_of: Callable[[str], np.ndarray] | None = None,
) -> list[SubjectMatch]:
    """``candidates`` of one face after the support and margin rules (see the module);
    ``weights_of``: each subject's per-vector weights (None: all weigh the same)."""
    if review_threshold >= threshold or not candidates:
        return list(candidates)
    out: list[SubjectMatch] = []
    for match in candidates:
        weights = None if weights_of is None else list(weights_of(match.subject_id))
        if match.certain and support(views, vectors_of(match.subject_id), weights) < threshold:
            match = dataclasses.replace(match, certain=False)
        out.append(match)
    best = max(out, key=lambda m: m.similarity)
    margin = MARGIN * (threshold - review_threshold)
    close = [m for m in out if best.similarity - m.similarity < margin]
    if best.certain and len(close) > 1:
        near = {m.subject_id for m in close}
        out = [dataclasses.replace(m, certain=False) if m.subject_id in near else m for m in out]
    return out
