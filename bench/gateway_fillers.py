"""Synthetic filler subjects for ``python -m bench gateway``: embeddings like real ones.

:class:`FillerModel` is fitted on real labelled embeddings (identity centres and the
within-identity spread, covariances shrunk towards isotropic by :data:`SHRINK`) or,
with too few identities, isotropic; :meth:`FillerModel.matched` scales the
within-identity noise so the genuine mean cosine matches a target.
:func:`pair_stats` and :func:`impostor_share` describe groups of embeddings.

Invariants: every vector drawn is unit length; drawing depends only on the
generator passed in (the same seed gives the same fillers).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["FILLER_VECTORS", "SHRINK", "FillerModel", "impostor_share", "pair_stats", "shrunk_cov"]

FILLER_VECTORS = 3  # embeddings per filler subject
SHRINK = 0.9  # covariance shrinkage towards (trace/d) * I (34 identities, 128 dimensions)


def shrunk_cov(samples: np.ndarray) -> np.ndarray:
    centred = samples - samples.mean(axis=0, keepdims=True)
    cov = centred.T @ centred / max(1, len(samples) - 1)
    d = cov.shape[0]
    shrunk: np.ndarray = (1 - SHRINK) * cov + SHRINK * (np.trace(cov) / d) * np.eye(d)
    return shrunk


@dataclass(frozen=True)
class FillerModel:
    """Two-level Gaussian of real embeddings: identity centres and photo residuals."""

    mean: np.ndarray
    between: np.ndarray  # Cholesky factor of the shrunk between-identity covariance
    within: np.ndarray  # Cholesky factor of the shrunk within-identity covariance
    identities: int
    photos: int
    within_scale: float = 1.0

    @classmethod
    def isotropic(cls, dim: int) -> FillerModel:
        """Identity centres uniform on the sphere (for too few real identities to fit)."""
        eye = np.eye(dim) / np.sqrt(dim)
        return cls(np.zeros(dim), eye, eye * 0.5, 0, 0)

    @classmethod
    def fit(cls, by_identity: dict[str, list[np.ndarray]]) -> FillerModel:
        centres = np.stack([np.mean(v, axis=0) for v in by_identity.values()])
        residuals = np.concatenate([np.stack(v) - np.mean(v, axis=0) for v in by_identity.values()
                                    if len(v) >= 2])
        within = shrunk_cov(np.vstack([residuals, -residuals]))  # zero-mean by construction
        return cls(centres.mean(axis=0), np.linalg.cholesky(shrunk_cov(centres)),
                   np.linalg.cholesky(within), len(centres),
                   sum(len(v) for v in by_identity.values()))

    def matched(self, target_genuine: float, rng: np.random.Generator) -> FillerModel:
        """This model with the within-identity noise scaled (grid 0.4-3.0) so that the mean
        cosine of two vectors of one filler is closest to ``target_genuine`` (the real one)."""
        best, best_gap = self, float("inf")
        for scale in np.arange(0.4, 3.0001, 0.05):
            model = FillerModel(self.mean, self.between, self.within * scale, self.identities,
                                self.photos, float(scale))
            genuine, _ = pair_stats(list(model.draw_many(np.random.default_rng(rng.integers(
                1 << 31)), 300, FILLER_VECTORS)))
            if abs(genuine - target_genuine) < best_gap:
                best, best_gap = model, abs(genuine - target_genuine)
        return best

    def draw_many(self, rng: np.random.Generator, identities: int, count: int) -> np.ndarray:
        """``count`` unit vectors for each of ``identities`` new identities: (n, count, d)."""
        d = len(self.mean)
        centres = self.mean + rng.standard_normal((identities, d)) @ self.between.T
        noise = rng.standard_normal((identities, count, d)) @ self.within.T
        vectors = centres[:, None, :] + noise
        unit: np.ndarray = vectors / np.linalg.norm(vectors, axis=2, keepdims=True)
        return unit.astype(np.float32)


def pair_stats(groups: Sequence[np.ndarray]) -> tuple[float, float]:
    """Mean cosine of pairs within a group and of pairs across groups."""
    genuine: list[float] = []
    for g in groups:
        if len(g) >= 2:
            sims = g @ g.T
            genuine.extend(sims[np.triu_indices(len(g), 1)].tolist())
    labels = np.concatenate([np.full(len(g), i) for i, g in enumerate(groups)])
    stacked = np.concatenate(list(groups))
    sims = stacked @ stacked.T
    upper = np.triu_indices(len(stacked), 1)
    across = labels[upper[0]] != labels[upper[1]]
    impostor = float(sims[upper][across].mean()) if across.any() else float("nan")
    return float(np.mean(genuine)) if genuine else float("nan"), impostor


def impostor_share(groups: Sequence[np.ndarray], threshold: float) -> float:
    """Share of cross-identity pairs of real faces at or above ``threshold``."""
    labels = np.concatenate([np.full(len(g), i) for i, g in enumerate(groups)])
    stacked = np.concatenate(list(groups))
    sims = stacked @ stacked.T
    upper = np.triu_indices(len(stacked), 1)
    across = labels[upper[0]] != labels[upper[1]]
    return float((sims[upper][across] >= threshold).mean())
