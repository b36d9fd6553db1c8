"""The registry's store of prior files: ``HOME/priors/<sha256>.<suffix>``.

Invariants
- A file is stored under the SHA-256 it was registered with, and only if its bytes
  hash to it (and, for a weights prior, it is a well-formed safetensors file): what
  lies under ``<sha256>.safetensors`` is always what was registered and validated.
- Stored files are written crash-safe (:func:`consentry.fsutil.atomic_output`) and
  never overwritten; the gateway hashes the stored file again on every load.
"""

from __future__ import annotations

import hmac
from pathlib import Path
from typing import TYPE_CHECKING

from consentry.errors import InputError, PriorHashMismatchError
from consentry.fsutil import atomic_output
from consentry.hashing import hash_file
from consentry.registry.safetensors_header import check_safetensors

if TYPE_CHECKING:
    from consentry.registry.models import Prior
    from consentry.registry.store import Registry

__all__ = ["prior_store_path", "store_prior_file"]


def prior_store_path(registry: Registry, sha256: str, kind: str = "") -> Path:
    """Where the registry keeps a registered prior's file, named by its SHA-256:
    weights as ``.safetensors``, an exemplar set's manifest as ``.json``."""
    suffix = ".json" if kind == "exemplars" else ".safetensors"
    return registry.home.root / "priors" / f"{sha256}{suffix}"


def store_prior_file(registry: Registry, prior: Prior, source: Path) -> Path:
    """Copy a registered prior's file into the registry's store (once); its path.

    The bytes are copied into a temporary file beside the target while they are
    hashed; the copy is kept (renamed into place) only if its SHA-256 is the
    registered one and, for a weights prior, it is a well-formed safetensors file,
    so what lies under ``<sha256>.safetensors`` is always what was registered and
    validated, even if ``source`` changed after registration. The gateway hashes
    the stored file again on every load, so a later swap is refused, never used.
    Written with :func:`consentry.fsutil.atomic_output` (file fsync, rename, folder
    fsync), streamed: a multi-GB DreamBooth file is never held in memory.
    """
    target = prior_store_path(registry, prior.sha256, prior.kind)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        return target
    with atomic_output(target, 0o644) as staged:
        try:
            with staged.open("xb") as dst:
                actual = hash_file(source, copy_to=dst).sha256
        except OSError as exc:
            raise InputError(f"cannot copy prior file {source}: {exc.strerror}") from exc
        if not hmac.compare_digest(actual, prior.sha256):
            raise PriorHashMismatchError(Path(source), prior.sha256, actual)
        if prior.kind != "exemplars":
            check_safetensors(staged)
    return target
