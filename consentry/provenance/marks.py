"""A release's durable marks: the watermark its outputs carry and their fingerprints.

The gate calls :func:`mark_outputs` on what the model made, before the post-check
and before the decision is logged: the watermarked pixels are what is checked,
hashed into the decision, fingerprinted and released. The marks go into the
decision's signed statement (``release``: the id and, per output, the watermark
algorithm and both fingerprints, see ``consentry.registry.decisions.check_marks``)
and into each output's manifest as ``c2pa.soft-binding`` assertions
(:func:`soft_bindings`).

Invariants
- One random 64-bit release id per job, chosen here, before the decision exists;
  every output of the job carries it.
- An output recorded with ``watermark`` set decodes to the id as released (the
  watermark checks its own work); one too small to carry it is recorded with
  ``watermark: None`` and gets no watermark soft binding, never a false claim.
- The fingerprints are of the final pixels (after watermarking).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from consentry.errors import ProvenanceError
from consentry.provenance.fingerprint import ISCC_ALG, PDQ_ALG, Fingerprint, fingerprint
from consentry.provenance.watermark import WATERMARK_ALG, embed, new_release_id

__all__ = ["SOFT_BINDING_LABEL", "mark_image", "mark_outputs", "soft_bindings"]

SOFT_BINDING_LABEL = "c2pa.soft-binding"


def mark_image(
    pixels: NDArray[np.uint8], release_id: str
) -> tuple[NDArray[np.uint8], dict[str, Any]]:
    """``pixels`` watermarked with ``release_id`` (when they can carry it) and their mark."""
    watermark: str | None = WATERMARK_ALG
    try:
        marked = embed(pixels, release_id)
    except ProvenanceError:
        marked, watermark = pixels, None
    return marked, {"watermark": watermark, **fingerprint(marked).to_json()}


def mark_outputs(images: Sequence[Any]) -> tuple[str, list[Any], list[dict[str, Any]]]:
    """A new release id, the images (PIL) watermarked with it, and each one's mark."""
    release_id = new_release_id()
    marked: list[Any] = []
    marks: list[dict[str, Any]] = []
    for image in images:
        pixels, mark = mark_image(np.asarray(image.convert("RGB"), dtype=np.uint8), release_id)
        marked.append(Image.fromarray(pixels))
        marks.append(mark)
    return release_id, marked, marks


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _iscc_bytes(code: str) -> bytes:
    import iscc_core

    return bytes(iscc_core.decode_base32(code.removeprefix("ISCC:")))


def soft_bindings(release_id: str | None, mark: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """The ``c2pa.soft-binding`` assertions of one output: ISCC (``io.iscc.v0``, the
    Content-Code Image's header and body), PDQ (32 bytes) and the watermark (the 8-byte
    release id; only when the output carries it). Each value is base64, the whole
    image is the scope. [] without marks."""
    if release_id is None or mark is None:
        return []
    print_ = Fingerprint.from_json(mark)
    entries = [
        (ISCC_ALG, _iscc_bytes(print_.iscc)),
        (PDQ_ALG, bytes.fromhex(print_.pdq)),
    ]
    if mark.get("watermark") == WATERMARK_ALG:
        entries.append((WATERMARK_ALG, bytes.fromhex(release_id)))
    return [
        {
            "label": SOFT_BINDING_LABEL,
            "data": {"alg": alg, "blocks": [{"scope": {}, "value": _b64(value)}]},
        }
        for alg, value in entries
    ]
