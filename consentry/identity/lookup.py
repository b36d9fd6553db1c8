"""The one face pipeline: images -> faces -> who they are.

Detect, cap, embed and match, written once and used by the gate
(:mod:`consentry.gate.facts`), ``consentry match`` and ``consentry audit``, so
what one of them sees in an image, every one sees.

Invariants
- Faces come from the face scan (:func:`consentry.faces.scan.scan_images`: every
  frame, every view of transparency, every orientation, small faces by tiling).
- The face cap (``max_faces``, :attr:`consentry.limits.Limits.max_faces` by
  default) is checked across all the images of one call before anything is
  embedded: more faces is a :class:`~consentry.errors.InputError` ("too many
  faces"), never a partial answer.
- A face that could not be embedded is an :class:`~consentry.errors.InputError`
  (fail closed: a face nobody can match is never treated as nobody's).
- A face that matches no registered subject and is *incidental* (part of a
  larger face, or a weak turned look: :attr:`ScannedFace.incidental`) is dropped;
  every other face is kept, matched or not.
- Matches come from the :class:`~consentry.identity.index.IdentityIndex`,
  refreshed first (it follows the signed log), through its second stage
  (:mod:`consentry.identity.second_stage`: with a review band, a candidate may
  turn uncertain, never disappear); no images: no face work and no lock of the
  index (a prompt-only check costs nothing here).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from consentry.errors import InputError
from consentry.faces.engine import FaceEngine
from consentry.faces.images import LoadedImage
from consentry.faces.scan import ScannedFace, scan_images
from consentry.identity.index import IdentityIndex, SubjectMatch
from consentry.limits import Limits

__all__ = ["FoundFace", "lookup_faces"]


@dataclass(frozen=True, eq=False)
class FoundFace:
    """One face of one image and every registered subject it matches, best first."""

    image: int  # position of its image in the call
    position: int  # position among its image's scanned faces
    face: ScannedFace
    matches: tuple[SubjectMatch, ...]

    @property
    def bbox(self) -> list[float]:
        return [round(v, 1) for v in self.face.face.bbox]


def lookup_faces(
    engine: FaceEngine,
    index: IdentityIndex,
    images: Sequence[LoadedImage],
    max_faces: int | None = None,
) -> list[list[FoundFace]]:
    """Every face of every image, each with the subjects it matches, per image in order
    (see the module's invariants). ``max_faces``: the cap over all ``images`` together
    (None: :attr:`Limits.max_faces`)."""
    if not images:
        return []
    cap = Limits().max_faces if max_faces is None else max_faces
    index.refresh()
    scanned = scan_images(engine, images, cap)
    found: list[list[FoundFace]] = []
    for number, faces in enumerate(scanned):
        if any(not face.embeddings for face in faces):
            raise InputError(f"image {number}: a face could not be embedded")
        matched = index.match_groups([face.embeddings for face in faces])
        found.append(
            [
                FoundFace(number, position, face, tuple(matches))
                for position, (face, matches) in enumerate(zip(faces, matched, strict=True))
                if matches or not face.incidental
            ]
        )
    return found
