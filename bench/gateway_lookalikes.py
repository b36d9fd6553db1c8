"""Real impostors for ``python -m bench gateway``: stranger fillers and the look-alike count.

- :func:`strangers`: the real stranger faces of :mod:`bench.faces_1n_data` that the
  gateway bench does not send (the shipped repository photos are sent as unregistered
  faces, so they are not also enrolled), one ``(1, d)`` array each.
- :func:`lookalikes`: with plain numpy (not the gateway), how many sent photos have a
  face at or above the threshold against a subject that is not theirs: another real
  registered identity, a stranger filler, a synthetic filler. Each is a refusal (or a
  hold) caused by a look-alike; nothing is screened to avoid them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bench.faces_1n_data import EmbedCache
from bench.faces_1n_data import strangers as stranger_faces
from bench.faces_data import load_photos
from consentry.faces.engine import FaceEngine

__all__ = ["lookalikes", "strangers"]

SENT_SOURCE = "repository photos"  # sent by the gateway bench as unregistered photos


def strangers(engine: FaceEngine, folder: Path | None, stats: dict[str, Any]
              ) -> list[np.ndarray]:
    if folder is None or not (folder / "MANIFEST.tsv").is_file():
        stats["stranger_sources"] = {}
        return []
    cache = EmbedCache(engine)
    faces, sources = stranger_faces(folder, load_photos(folder), cache, lambda _text: None)
    cache.save()
    kept = [f for f in faces if not f.source.startswith(SENT_SOURCE)]
    stats["stranger_sources"] = {s: v["faces"] for s, v in sources["sources"].items()
                                 if not s.startswith(SENT_SOURCE)}
    return [f.vector.reshape(1, -1) for f in kept]


def _hits(faces: np.ndarray, groups: list[np.ndarray], threshold: float) -> int:
    """How many of ``groups`` (subjects) any face in ``faces`` matches."""
    if not groups:
        return 0
    best = np.array([float((faces @ g.T).max()) for g in groups])
    return int((best >= threshold).sum())


def lookalikes(sent: list[tuple[str, str | None, np.ndarray]],
               registered: dict[str, np.ndarray], real: list[np.ndarray],
               synthetic: list[np.ndarray], threshold: float) -> dict[str, Any]:
    """Per kind of subject, the sent photos that falsely match at least one (and examples)."""
    counts = {"real identity": 0, "stranger filler": 0, "synthetic filler": 0, "any": 0}
    examples: list[str] = []
    matched: list[str] = []
    real_pairs = real_hits = 0
    for name, own, faces in sent:
        others = [v for i, v in registered.items() if i != own]
        real_pairs += len(others) + len(real)
        hits = {"real identity": _hits(faces, others, threshold),
                "stranger filler": _hits(faces, real, threshold),
                "synthetic filler": _hits(faces, synthetic, threshold)}
        real_hits += hits["real identity"] + hits["stranger filler"]
        for kind, n in hits.items():
            counts[kind] += n > 0
        if any(hits.values()):
            counts["any"] += 1
            matched.append(name)
            if len(examples) < 6:
                examples.append(f"{name} ({'registered' if own else 'unregistered'}): "
                                + ", ".join(f"{n} {k}" for k, n in hits.items() if n))
    rate = real_hits / real_pairs if real_pairs else 0.0
    subjects = len(registered) + len(real) + len(synthetic)
    return {"real_pairs": real_pairs, "real_hits": real_hits, "real_rate": rate,
            "subjects": subjects, "expected_any": 1.0 - (1.0 - rate) ** (subjects - 1),
            "sent_photos": len(sent), "registered_sent": sum(o is not None for _, o, _f in sent),
            "photos_matching": counts, "examples": examples, "matched": matched,
            "threshold": threshold}
