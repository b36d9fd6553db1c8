"""Memorization check: is an output a near-copy of one of the prior's photos?

A personal prior (trained weights or exemplar photos) can reproduce a training
photo rather than depict the person anew. Every output of a job that uses a prior
is compared with the prior's reference photos: each face found in the output is
aligned into the enrollment frame (256 px, the frame the kept photos are stored in)
and compared with every reference by structural similarity and by identity (cosine
of the engine's embeddings).

SSIM is taken at 48 px (area-downscaled), over the central 36 px, as the best over
small shifts (up to 3 px) and scales (0.94-1.06): full-resolution SSIM of two
separately aligned copies of one photo falls to about 0.5 from a few pixels of
landmark jitter, while at 48 px with the search a copy re-encoded at a third of its
size scores 0.95, the aligned photo pasted into a new canvas 0.83, its mirror image
0.60, another photo of the same person 0.32 and other people 0.13-0.23 (shipped
photos). The default limit, 0.7, sits between copies and new depictions.

Invariants
- The score of an output is its *maximum* SSIM over (face, reference) pairs: one
  copied face is enough. Identity similarity is reported but never used to refuse
  (a faithful depiction is supposed to look like the person).
- References are decrypted in memory only; the score names a reference by its
  photo SHA-256, never by content.
- An output without a detectable face has no score (``None``): nothing to copy.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np
from PIL import Image

from consentry.errors import InputError
from consentry.faces.engine import FaceEngine, cosine
from consentry.faces.quality import EXEMPLAR_SIZE, align_exemplar
from consentry.generation.restoration.metrics import embed_aligned, ssim
from consentry.registry.biometrics import decrypt_photos
from consentry.registry.models import Prior
from consentry.registry.store import Registry

__all__ = [
    "DEFAULT_MAX_COPY_SSIM",
    "MemorizationScore",
    "Reference",
    "as_reference",
    "copy_ssim",
    "memorization_score",
    "prior_references",
]

DEFAULT_MAX_COPY_SSIM = 0.7
"""Outputs at or above this SSIM to a reference photo are withheld as near-copies."""

_SIDE = 48
_MARGIN = _SIDE // 8
_SHIFT = 3
_SCALES = (0.94, 1.0, 1.06)


@dataclass(frozen=True, eq=False)
class Reference:
    """One reference photo: its SHA-256 and the aligned pixels (256 px RGB)."""

    sha256: str
    pixels: np.ndarray


@dataclass(frozen=True)
class MemorizationScore:
    """The nearest (output face, reference photo) pair of one output."""

    ssim: float
    identity: float
    reference_sha256: str
    faces: int

    def to_json(self) -> dict[str, Any]:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}


def _aligned(pixels: np.ndarray) -> np.ndarray:
    array = np.asarray(pixels, dtype=np.uint8)
    if array.shape[:2] != (EXEMPLAR_SIZE, EXEMPLAR_SIZE):
        array = np.asarray(
            Image.fromarray(array).resize((EXEMPLAR_SIZE, EXEMPLAR_SIZE), Image.Resampling.BICUBIC)
        )
    return np.ascontiguousarray(array)


def prior_references(registry: Registry, prior: Prior) -> list[Reference]:
    """The photos a prior was made from, decrypted in memory.

    Exemplar and trained priors list their photos' hashes in ``details["photos"]``;
    a prior registered without that list is compared with all the subject's kept
    photos. Raises (ErasedError, ...) when they cannot be read: the caller refuses.
    """
    kept = decrypt_photos(registry, prior.subject_id)
    wanted = prior.details.get("photos")
    chosen = [(sha, data) for sha, data in kept if not wanted or sha in wanted]
    if wanted and len({sha for sha, _ in chosen}) < len(set(wanted)):
        raise InputError(
            f"prior {prior.id}: some of its photos are no longer in the vault, so its "
            "outputs cannot be checked for copies"
        )
    return [
        as_reference(sha, np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
        for sha, data in chosen
    ]


def as_reference(sha256: str, pixels: np.ndarray) -> Reference:
    """A decrypted aligned photo as a reference (resized to the 256 px frame if needed)."""
    return Reference(sha256, _aligned(pixels))


def _small(aligned: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(
        cv2.resize(aligned, (_SIDE, _SIDE), interpolation=cv2.INTER_AREA), dtype=np.uint8
    )


def copy_ssim(aligned: np.ndarray, reference: np.ndarray) -> float:
    """SSIM of two aligned faces at 48 px, best over small shifts and scales."""
    face, ref = _small(aligned), _small(reference)
    inner = slice(_MARGIN, _SIDE - _MARGIN)
    target = np.ascontiguousarray(ref[inner, inner])
    centre = _SIDE / 2
    best = -1.0
    for scale in _SCALES:
        for dx in range(-_SHIFT, _SHIFT + 1):
            for dy in range(-_SHIFT, _SHIFT + 1):
                matrix = np.array(
                    [
                        [scale, 0, dx + centre - scale * centre],
                        [0, scale, dy + centre - scale * centre],
                    ],
                    dtype=np.float32,
                )
                moved = cv2.warpAffine(face, matrix, (_SIDE, _SIDE), borderMode=cv2.BORDER_REFLECT)
                best = max(best, ssim(np.ascontiguousarray(moved[inner, inner]), target))
    return best


def memorization_score(
    engine: FaceEngine, output: np.ndarray, references: Sequence[Reference]
) -> MemorizationScore | None:
    """The output's nearest reference by SSIM of aligned faces; None without a face."""
    if not references:
        raise InputError("a memorization check needs at least one reference photo")
    faces = engine.detect(np.ascontiguousarray(output, dtype=np.uint8))
    if not faces:
        return None
    ref_vectors = [embed_aligned(r.pixels, engine) for r in references]
    best: MemorizationScore | None = None
    for face in faces:
        aligned = _aligned(align_exemplar(output, face))
        vector = embed_aligned(aligned, engine)
        for reference, ref_vector in zip(references, ref_vectors, strict=True):
            score = MemorizationScore(
                copy_ssim(aligned, reference.pixels),
                cosine(vector, ref_vector),
                reference.sha256,
                len(faces),
            )
            if best is None or score.ssim > best.ssim:
                best = score
    return best
