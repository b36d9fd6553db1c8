"""Thresholds from labelled data: FMR, FNMR and EER over every pair.

Invariants
- Scores are cosine similarities; a pair matches iff ``score >= threshold``.
- ``threshold_at_fmr`` returns the lowest threshold whose false-match rate on
  the impostor pairs is at most the target, i.e. it never trades FMR above the
  target for a better FNMR.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import numpy as np

from consentry.errors import InputError

__all__ = [
    "PairScores",
    "Rates",
    "equal_error_rate",
    "labelled_photos",
    "pair_scores",
    "rates_at",
    "threshold_at_fmr",
]

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
    for identity, photo in items:
        digest.update(f"{identity}/{photo.name}\n".encode())
        digest.update(hashlib.sha256(photo.read_bytes()).digest())
    return items, digest.hexdigest()


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
