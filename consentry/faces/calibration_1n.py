"""A 1:N operating point: two thresholds chosen for an FPIR budget at gallery size N.

The gate compares a face with every registered subject, so the error that grows
with the registry is the per-subject false-match rate ``p``: the chance that a
stranger's face matches one given other subject, scored as the best similarity
over that subject's photos. :func:`identification_scores` measures it on a
labelled set the 1:N way: every photo (the probe) against every *other*
identity's photos (one impostor probe-subject pair per probe and other
identity), and, leave-one-out, against its own identity's other photos (one
genuine probe per photo whose identity has another photo).

:func:`operating_point` chooses

- the **upper** (refuse) threshold for the budget ``fpir``: a stranger's face is
  matched (refused) with probability at most ``fpir`` at N subjects;
- the **review** threshold (the lower edge of the hold band) for the budget
  ``held_fpir >= fpir``: a stranger's face is stopped at all (held or refused)
  with probability at most ``held_fpir``. A registered face below it is missed
  (it fails open), between the two it is held.

Invariants
- Each threshold is the lowest one whose per-subject false-match rate has a
  one-sided Clopper-Pearson upper bound (at ``confidence``) at most
  ``rate_for_fpir(budget, N)``; a threshold is never chosen from the point
  estimate alone. Scores tie conservatively: a pair matches iff
  ``score >= threshold`` and the threshold lies just above an impostor score.
- A set too small to show the target rate even with no false match (fewer than
  ``pairs_needed(rate)`` impostor pairs) is a :class:`CalibrationRejectedError`
  whose message gives both numbers; nothing is chosen from it.
- ``max_gallery`` is the largest N at which both budgets still hold at the
  bounds measured at the chosen thresholds (so it is >= the N chosen for).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from consentry.errors import CalibrationRejectedError, InputError
from consentry.faces.calibration import MAX_SHIFT, PairScores, equal_error_rate, required_pairs
from consentry.faces.identification import (
    DEFAULT_CONFIDENCE,
    max_gallery,
    pairs_needed,
    rate_for_fpir,
    rate_upper_bound,
)

__all__ = [
    "DEFAULT_HELD_FPIR",
    "IdentificationScores",
    "OperatingPoint",
    "RatePoint",
    "check_budgets",
    "identification_scores",
    "operating_point",
    "operating_point_problems",
    "threshold_for_rate",
]

DEFAULT_HELD_FPIR = 0.05  # default budget of strangers' faces held or refused


@dataclass(frozen=True)
class IdentificationScores:
    """Best similarities, one per genuine probe and one per impostor probe-subject pair."""

    genuine: np.ndarray
    impostor: np.ndarray
    probes: int
    subjects: int


@dataclass(frozen=True)
class RatePoint:
    """One threshold and the per-subject false-match rate it was chosen for."""

    threshold: float
    target_rate: float  # rate_for_fpir(budget, N)
    errors: int  # impostor pairs at or above the threshold
    rate: float  # errors / impostor pairs
    rate_bound: float  # Clopper-Pearson upper bound of ``rate``, <= target_rate


@dataclass(frozen=True)
class OperatingPoint:
    fpir: float
    held_fpir: float
    gallery: int
    upper: RatePoint
    review: RatePoint
    fnir_missed: float  # genuine probes below the review threshold (allowed: fail open)
    fnir_held: float  # genuine probes in [review, upper) (held for a person)
    eer: float
    max_gallery: int
    genuine_probes: int
    impostor_pairs: int


def identification_scores(labels: Sequence[str], embeddings: np.ndarray) -> IdentificationScores:
    """The 1:N scores of a labelled set of unit embeddings (see the module)."""
    if len(labels) != len(embeddings):
        raise InputError("one label per embedding")
    names = sorted(set(labels))
    if len(names) < 2:
        raise InputError("need at least two identities")
    own = np.array([names.index(label) for label in labels])
    sims = np.asarray(embeddings, dtype=np.float64) @ np.asarray(embeddings, dtype=np.float64).T
    np.fill_diagonal(sims, -np.inf)  # leave-one-out: a photo is never its own gallery
    best = np.stack([sims[:, own == s].max(axis=1) for s in range(len(names))], axis=1)
    mine = best[np.arange(len(own)), own]
    genuine = mine[np.isfinite(mine)]  # a probe whose identity has another photo
    others = np.ones_like(best, dtype=bool)
    others[np.arange(len(own)), own] = False
    if genuine.size == 0:
        raise InputError("need at least one identity with two photos")
    return IdentificationScores(genuine, best[others], len(labels), len(names))


def threshold_for_rate(
    impostor: np.ndarray,
    target_rate: float,
    what: str,
    confidence: float = DEFAULT_CONFIDENCE,
) -> RatePoint:
    """The lowest threshold whose rate bound is at most ``target_rate`` (see the module)."""
    n = int(impostor.size)
    needed = pairs_needed(target_rate, confidence)
    if n < needed or rate_upper_bound(0, n, confidence) > target_rate:
        raise CalibrationRejectedError(
            f"the set has {n} impostor probe-subject pairs; {what} needs a per-subject "
            f"false-match rate of {target_rate:.3g}, which needs at least {needed} "
            f"(Clopper-Pearson {confidence:g}, no false match)",
            hint="add identities or photos, raise the budget, or give a smaller --gallery",
        )
    low, high = 0, n - 1  # the most false matches whose bound stays within the target
    while low < high:  # the bound rises with the errors: bisect
        mid = (low + high + 1) // 2
        if rate_upper_bound(mid, n, confidence) <= target_rate:
            low = mid
        else:
            high = mid - 1
    allowed = low
    ranked = np.sort(impostor)[::-1]
    threshold = float(np.nextafter(ranked[allowed], np.inf))
    errors = int(np.count_nonzero(impostor >= threshold))
    bound = rate_upper_bound(errors, n, confidence)
    return RatePoint(threshold, target_rate, errors, errors / n, bound)


def check_budgets(fpir: float, held_fpir: float, gallery: int) -> None:
    """InputError unless 0 < fpir <= held_fpir < 1 and gallery is a positive integer."""
    if not (math.isfinite(fpir) and 0.0 < fpir < 1.0):
        raise InputError(f"--fpir must be in (0, 1), got {fpir!r}")
    if not (math.isfinite(held_fpir) and 0.0 < held_fpir < 1.0):
        raise InputError(f"--held-fpir must be in (0, 1), got {held_fpir!r}")
    if held_fpir < fpir:
        raise InputError(
            f"--held-fpir {held_fpir:g} is below --fpir {fpir:g}: a face refused is also "
            "stopped, so the held budget counts it (held-fpir >= fpir)"
        )
    if isinstance(gallery, bool) or not isinstance(gallery, int) or gallery < 1:
        raise InputError(f"--gallery must be a positive integer, got {gallery!r}")


def operating_point(
    scores: IdentificationScores,
    fpir: float,
    held_fpir: float,
    gallery: int,
    confidence: float = DEFAULT_CONFIDENCE,
) -> OperatingPoint:
    """Both thresholds for the budgets at ``gallery`` subjects (see the module)."""
    check_budgets(fpir, held_fpir, gallery)
    upper = threshold_for_rate(
        scores.impostor,
        rate_for_fpir(fpir, gallery),
        f"an FPIR of {fpir:g} at N={gallery}",
        confidence,
    )
    review = threshold_for_rate(
        scores.impostor,
        rate_for_fpir(held_fpir, gallery),
        f"a held FPIR of {held_fpir:g} at N={gallery}",
        confidence,
    )
    genuine = scores.genuine
    budget = min(max_gallery(fpir, upper.rate_bound), max_gallery(held_fpir, review.rate_bound))
    return OperatingPoint(
        fpir=fpir,
        held_fpir=held_fpir,
        gallery=gallery,
        upper=upper,
        review=review,
        fnir_missed=float(np.mean(genuine < review.threshold)),
        fnir_held=float(np.mean((genuine >= review.threshold) & (genuine < upper.threshold))),
        eer=equal_error_rate(PairScores(genuine, scores.impostor)),
        max_gallery=budget,
        genuine_probes=int(genuine.size),
        impostor_pairs=int(scores.impostor.size),
    )


def operating_point_problems(
    point: OperatingPoint, max_fnmr: float, default: float, allow_far: bool = False
) -> list[str]:
    """Why ``point`` must not be put in force (empty: it may be).

    The FNMR guard of :func:`~consentry.faces.calibration.calibration_problems`
    applied to the review threshold (a registered face below it is allowed): at
    least ``3 / max_fnmr`` genuine probes and a missed rate at most ``max_fnmr``;
    and the upper threshold within ``MAX_SHIFT`` of the shipped default unless
    ``allow_far``."""
    problems: list[str] = []
    if not 0.0 < max_fnmr < 1.0:
        return [f"the FNMR bound must be in (0, 1), not {max_fnmr:g}"]
    needed = required_pairs(max_fnmr)
    if point.genuine_probes < needed:
        problems.append(
            f"the set has {point.genuine_probes} genuine probes; an FNIR bound of "
            f"{max_fnmr:g} needs at least {needed} (3 / FNIR): add photos per identity"
        )
    if point.fnir_missed > max_fnmr:
        problems.append(
            f"FNIR {point.fnir_missed:.4f} below the review threshold "
            f"{point.review.threshold:.4f} exceeds the bound {max_fnmr:g}: registered faces "
            "would go unmatched, and an unmatched face is allowed (raise --held-fpir, or "
            "raise --max-fnmr knowingly)"
        )
    shift = point.upper.threshold - default
    if abs(shift) > MAX_SHIFT and not allow_far:
        side = "above" if shift > 0 else "below"
        problems.append(
            f"threshold {point.upper.threshold:.4f} is {abs(shift):.4f} {side} the shipped "
            f"default {default:.4f} (more than {MAX_SHIFT:g}): pass --allow-far-threshold "
            "to apply it"
        )
    return problems
