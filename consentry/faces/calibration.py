"""Thresholds from labelled data: FMR, FNMR and EER over every pair.

Invariants
- Scores are cosine similarities; a pair matches iff ``score >= threshold``.
- ``threshold_at_fmr`` returns the lowest threshold whose false-match rate on
  the impostor pairs is at most the target, i.e. it never trades FMR above the
  target for a better FNMR.
- ``calibration_problems`` is the gate before a measured threshold is put in
  force; it is empty only if the set has at least ``3 / target FMR`` impostor
  pairs and ``3 / max FNMR`` genuine pairs (the rule of three: with no error in
  N trials, 3/N bounds the rate at 95% confidence), the FNMR is at most the
  bound, and the threshold lies within ``MAX_SHIFT`` of the shipped default
  (unless that is explicitly overridden). A threshold with a high FNMR misses
  registered faces, and a missed face is an allowed one: it fails open.
- ``labelled_photos`` refuses a set holding the same file (identical bytes) twice:
  under two identities it is an impostor pair of one face, under one a perfect
  genuine pair, and either skews the threshold it measures.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import numpy as np

from consentry.errors import CalibrationRejectedError, InputError
from consentry.hashing import sha256_file

__all__ = [
    "MAX_FNMR",
    "MAX_SHIFT",
    "PairScores",
    "Rates",
    "calibration_problems",
    "equal_error_rate",
    "labelled_photos",
    "pair_scores",
    "rates_at",
    "required_pairs",
    "threshold_at_fmr",
]

MAX_FNMR = 0.05  # default bound on the FNMR of a threshold put in force
MAX_SHIFT = 0.15  # cosine distance from the shipped default that needs an override

_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff"}


@dataclass(frozen=True)
class PairScores:
    genuine: np.ndarray
    impostor: np.ndarray


@dataclass(frozen=True)
class Rates:
    threshold: float
    fmr: float
    fnmr: float
    eer: float
    genuine_pairs: int
    impostor_pairs: int


def labelled_photos(folder: Path) -> tuple[list[tuple[str, Path]], str]:
    """``folder/<identity>/<photo>`` as (identity, path) pairs, and a hash of the listing."""
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder of <identity>/<photo> files")
    items = sorted(
        (person.name, photo)
        for person in folder.iterdir()
        if person.is_dir()
        for photo in person.iterdir()
        if photo.suffix.lower() in _SUFFIXES
    )
    digest = hashlib.sha256()
    first_seen: dict[str, Path] = {}
    copies: list[str] = []
    for identity, photo in items:
        content = sha256_file(photo)
        digest.update(f"{identity}/{photo.name}\n".encode())
        digest.update(bytes.fromhex(content))
        earlier = first_seen.setdefault(content, photo)
        if earlier is not photo:
            where = "one identity" if earlier.parent.name == identity else "two identities"
            copies.append(f"{_shown(folder, earlier)} = {_shown(folder, photo)} ({where})")
    if copies:
        raise CalibrationRejectedError(
            f"{len(copies)} photo(s) appear twice in {folder}: " + "; ".join(copies[:5])
            + ("; ..." if len(copies) > 5 else "")
            + ". A copy under two identities scores one face as an impostor pair against "
            "itself, and under one identity as a perfect genuine pair: either skews the threshold",
            hint="remove one copy of each (identical bytes), then calibrate again",
        )
    return items, digest.hexdigest()


def _shown(folder: Path, photo: Path) -> str:
    return str(photo.relative_to(folder))


def pair_scores(labels: Sequence[str], embeddings: np.ndarray) -> PairScores:
    """Cosine of every pair of unit embeddings, split into genuine and impostor."""
    if len(labels) != len(embeddings):
        raise InputError("one label per embedding")
    sims = embeddings @ embeddings.T
    genuine: list[float] = []
    impostor: list[float] = []
    for i, j in combinations(range(len(labels)), 2):
        (genuine if labels[i] == labels[j] else impostor).append(float(sims[i, j]))
    if not genuine or not impostor:
        raise InputError("need at least two identities, one of them with two photos")
    return PairScores(np.array(genuine), np.array(impostor))


def rates_at(scores: PairScores, threshold: float) -> tuple[float, float]:
    """(FMR, FNMR) at ``threshold``."""
    fmr = float(np.mean(scores.impostor >= threshold))
    fnmr = float(np.mean(scores.genuine < threshold))
    return fmr, fnmr


def equal_error_rate(scores: PairScores) -> float:
    """The rate where FMR and FNMR cross (mean of the two at the closest threshold)."""
    candidates = np.unique(np.concatenate([scores.genuine, scores.impostor]))
    best = (2.0, 1.0)
    for threshold in candidates:
        fmr, fnmr = rates_at(scores, float(threshold))
        gap = abs(fmr - fnmr)
        if gap < best[0]:
            best = (gap, (fmr + fnmr) / 2)
    return best[1]


def threshold_at_fmr(scores: PairScores, target_fmr: float) -> Rates:
    """The lowest threshold with FMR <= ``target_fmr``, with its rates and the EER."""
    if not 0.0 <= target_fmr < 1.0:
        raise InputError("the target FMR must be in [0, 1)")
    impostor = np.sort(scores.impostor)[::-1]
    allowed = int(np.floor(target_fmr * len(impostor)))  # impostors that may pass
    if allowed >= len(impostor):
        threshold = float(impostor[-1])
    else:
        threshold = float(np.nextafter(impostor[allowed], np.inf))
    fmr, fnmr = rates_at(scores, threshold)
    return Rates(
        threshold, fmr, fnmr, equal_error_rate(scores), len(scores.genuine), len(scores.impostor)
    )


def required_pairs(rate: float) -> int:
    """Pairs needed to measure an error rate down to ``rate``: ``ceil(3 / rate)``
    (the rule of three); 0 for a rate that cannot be measured (<= 0)."""
    if not rate > 0.0:
        return 0
    return math.ceil(3.0 / rate - 1e-9)


def calibration_problems(
    rates: Rates,
    target_fmr: float,
    max_fnmr: float,
    default: float,
    allow_far: bool = False,
) -> list[str]:
    """Why ``rates`` must not be put in force (empty: it may be). See the invariants."""
    problems: list[str] = []
    if not target_fmr > 0.0:
        problems.append("a target FMR of 0 cannot be measured on any finite set")
    else:
        needed = required_pairs(target_fmr)
        if rates.impostor_pairs < needed:
            problems.append(
                f"the set has {rates.impostor_pairs} impostor pairs; a target FMR of "
                f"{target_fmr:g} needs at least {needed} (3 / FMR): add identities or photos"
            )
    if not 0.0 < max_fnmr < 1.0:
        problems.append(f"the FNMR bound must be in (0, 1), not {max_fnmr:g}")
    else:
        needed = required_pairs(max_fnmr)
        if rates.genuine_pairs < needed:
            problems.append(
                f"the set has {rates.genuine_pairs} genuine pairs; an FNMR bound of "
                f"{max_fnmr:g} needs at least {needed} (3 / FNMR): add photos per identity"
            )
        if rates.fnmr > max_fnmr:
            problems.append(
                f"FNMR {rates.fnmr:.4f} at threshold {rates.threshold:.4f} exceeds the bound "
                f"{max_fnmr:g}: registered faces would go unmatched, and an unmatched face "
                "is allowed (check the labels, or raise --max-fnmr knowingly)"
            )
    shift = rates.threshold - default
    if abs(shift) > MAX_SHIFT and not allow_far:
        side = "above" if shift > 0 else "below"
        problems.append(
            f"threshold {rates.threshold:.4f} is {abs(shift):.4f} {side} the shipped default "
            f"{default:.4f} (more than {MAX_SHIFT:g}): pass --allow-far-threshold to apply it"
        )
    return problems
