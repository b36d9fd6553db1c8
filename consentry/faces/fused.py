"""The fused engine: YuNet detection, SFace *and* dlib embeddings of every face.

Score-level fusion written as one vector, so that the identity index, calibration
and thresholds work unchanged: with ``s`` the unit SFace embedding and ``d`` the
unit dlib descriptor of a face, the fused embedding is

    e = [sqrt(w) * s, sqrt(1 - w) * d]            (256-d, unit length)

and for two faces ``cos(e, e') = w * cos_sface + (1 - w) * cos_dlib``: the
weighted mean of the two engines' cosines (an affine change of either score,
a shift or a common scale, is absorbed by the threshold, so only the relative
weight matters).

Choice of ``w`` (:data:`SFACE_WEIGHT` = 0.25), measured on ``shared/faces``
(``python -m bench fusion``: 126 faces of 34 subjects found by YuNet, 242
genuine and 7,633 impostor pairs, dlib's descriptor computed on YuNet's box):
dlib's normalised cosines sit high and narrow (impostor pairs: mean 0.831, sd
0.033), SFace's low and wide (mean 0.081, sd 0.096). The ``w`` that equalises
the two impostor spreads (``w sd_s = (1 - w) sd_d``) is 0.258. A sweep of ``w``
in steps of 0.05 for the FNMR at FMR <= 1e-3 per pair is flat at 0.0% from 0.15
to 0.30 (sface alone 2.1%, dlib on YuNet's box 2.5%; 0.4% from 0.35 to 0.75).
0.25 is the spread-equalising value rounded and the middle of the sweep's best
plateau. At FNIR 0% (leave-one-out, best over each subject's photos, 4,158
probe x other-subject pairs) the per-subject false-match rate is 0.31% for
sface, 0.12% for dlib and 0 of 4,158 for the fusion (< 0.072% by the rule of
three). The cost is dlib's: about 5x sface per face (bench/README.md).

Invariants
- ``detect`` and ``align`` are SFace's (YuNet boxes, five landmarks, the 112 px
  ArcFace crop); ``embed`` runs both networks on the same detected face (SFace on
  its aligned crop, dlib on its own 150 px chip from its shape predictor on the
  YuNet box) and returns the weighted concatenation above, unit length.
- ``version`` names the weight and both component versions: a change of the
  weight or of either model is a different engine version, and an index holds
  one engine (enrollments record name and version).
- One engine may be shared between threads (its components are).
"""

from __future__ import annotations

import math

import numpy as np

from consentry.errors import EngineError, InputError
from consentry.faces.dlib_engine import DlibEngine
from consentry.faces.engine import Face, FloatArray, ImageArray, analyze_with, unit_vector
from consentry.faces.sface import SFaceEngine

__all__ = ["SFACE_WEIGHT", "FusedEngine", "fuse"]

#: Weight of SFace's cosine in the fused score (dlib gets ``1 - SFACE_WEIGHT``).
SFACE_WEIGHT = 0.25


def fuse(sface: FloatArray, dlib: FloatArray, weight: float = SFACE_WEIGHT) -> FloatArray:
    """``[sqrt(w) s, sqrt(1 - w) d]`` of two unit vectors: a unit vector whose dot
    product with another fused vector is ``w cos_s + (1 - w) cos_d``."""
    if not 0.0 < weight < 1.0:
        raise InputError(f"fusion weight must lie in (0, 1), got {weight}")
    s = unit_vector(sface)
    d = unit_vector(dlib)
    out: FloatArray = np.concatenate(
        [math.sqrt(weight) * s, math.sqrt(1.0 - weight) * d]
    ).astype(np.float32)
    return unit_vector(out)


class FusedEngine:
    """YuNet detection; SFace and dlib embeddings fused at score level (256-d)."""

    name = "fused"

    def __init__(
        self,
        sface: SFaceEngine | None = None,
        dlib: DlibEngine | None = None,
        weight: float = SFACE_WEIGHT,
    ) -> None:
        if not 0.0 < weight < 1.0:
            raise InputError(f"fusion weight must lie in (0, 1), got {weight}")
        self.sface = sface if sface is not None else SFaceEngine()
        self.dlib = dlib if dlib is not None else DlibEngine()
        self.weight = float(weight)
        self.dim = self.sface.dim + self.dlib.dim
        self.scan_side = self.sface.scan_side
        self.model_hashes: dict[str, str] = {**self.sface.model_hashes, **self.dlib.model_hashes}
        self.version = f"fused-w{self.weight:g}[{self.sface.version}|{self.dlib.version}]"

    def __repr__(self) -> str:
        return f"FusedEngine(version={self.version!r})"

    def detect(self, image: ImageArray) -> list[Face]:
        """YuNet's faces (SFace's detector), largest first."""
        return self.sface.detect(image)

    def align(self, image: ImageArray, face: Face) -> ImageArray:
        """SFace's 112 x 112 ArcFace-aligned crop."""
        return self.sface.align(image, face)

    def embed(self, image: ImageArray, face: Face) -> FloatArray:
        """The fused 256-d unit embedding of ``face`` (see the module docstring)."""
        out = fuse(self.sface.embed(image, face), self.dlib.embed(image, face), self.weight)
        if out.size != self.dim:
            raise EngineError(f"fused embedding has {out.size} values, expected {self.dim}")
        return out

    def analyze(self, image: ImageArray) -> list[Face]:
        """Every face in the image, largest first, each with its fused embedding."""
        return analyze_with(self, image)
