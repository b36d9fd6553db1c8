"""Choose a face engine by name; each is built once per process and then shared.

Invariants
- ``ENGINE_NAMES`` lists every engine, default first: ``sface`` (YuNet + SFace,
  Apache-2.0 models shipped on PyPI), ``dlib`` (public-domain models shipped on
  PyPI), ``fused`` (YuNet detection, SFace and dlib embeddings fused at score
  level: :mod:`consentry.faces.fused`), ``insightface`` (only with a model pack the user supplies).
- ``get_engine`` returns the same object for the same ``(name, pack)`` for the
  life of the process; model files are verified when an engine is first built,
  and a failure is not cached (the next call tries again).
- An unknown name is an :class:`~consentry.errors.InputError` that lists the
  choices; a ``pack`` given to an engine that takes none is an ``InputError``
  too. Problems with the engine itself (missing package, missing or altered
  model files, missing pack) are :class:`~consentry.errors.EngineError`.
"""

from __future__ import annotations

import threading
from pathlib import Path

from consentry.errors import EngineError, InputError
from consentry.faces.engine import FaceEngine

__all__ = ["DEFAULT_ENGINE", "ENGINE_NAMES", "get_engine"]

ENGINE_NAMES: tuple[str, ...] = ("sface", "dlib", "fused", "insightface")
DEFAULT_ENGINE = "sface"

_engines: dict[tuple[str, Path | None], FaceEngine] = {}
_lock = threading.RLock()


def _build(name: str, pack: Path | None) -> FaceEngine:
    if name == "sface":
        from consentry.faces.sface import SFaceEngine

        return SFaceEngine()
    if name == "dlib":
        from consentry.faces.dlib_engine import DlibEngine

        return DlibEngine()
    if name == "fused":
        from consentry.faces.dlib_engine import DlibEngine
        from consentry.faces.fused import FusedEngine
        from consentry.faces.sface import SFaceEngine

        # the shared components: one set of models per process
        sface, dlib = _shared("sface"), _shared("dlib")
        if not (isinstance(sface, SFaceEngine) and isinstance(dlib, DlibEngine)):
            raise EngineError("the fused engine needs the sface and dlib engines")
        return FusedEngine(sface, dlib)
    from consentry.faces.insightface_engine import LICENCE_NOTE, InsightFaceEngine

    if pack is None:
        raise EngineError(f"the insightface engine needs a model pack folder; {LICENCE_NOTE}")
    return InsightFaceEngine(pack)


def _shared(name: str) -> FaceEngine:
    """The cached engine ``name`` (the caller holds ``_lock``)."""
    key = (name, None)
    engine = _engines.get(key)
    if engine is None:
        engine = _build(name, None)
        _engines[key] = engine
    return engine


def get_engine(name: str, pack: Path | None = None) -> FaceEngine:
    """The shared engine called ``name`` (``pack``: the insightface model-pack folder)."""
    if name not in ENGINE_NAMES:
        raise InputError(f"unknown face engine {name!r}; choose one of {', '.join(ENGINE_NAMES)}")
    if pack is not None and name != "insightface":
        raise InputError(f"the {name} engine takes no model pack; only insightface does")
    key_pack = Path(pack).expanduser().resolve() if pack is not None else None
    key = (name, key_pack)
    with _lock:
        engine = _engines.get(key)
        if engine is None:
            engine = _build(name, key_pack)
            _engines[key] = engine
        return engine
