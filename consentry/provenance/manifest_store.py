"""The manifest stores of released outputs, kept for the soft-binding resolver.

Platforms strip C2PA manifests; a stripped release recovered by its watermark and
fingerprint (:mod:`consentry.provenance.recover`) can then be given its signed
manifest back (``GET /v1/sbr/manifests/{id}``, ``application/c2pa``).

Invariants
- A store is kept only for an output of an allowed decision, right after signing,
  under the id ``<decision id>/<output index>``; keeping it twice is a no-op.
- What is kept is public already (the manifest travels with every copy of the
  release): no face, no image (our manifests embed no thumbnails), ids and hashes.
- A store read back is checked against the SHA-256 recorded with it; a mismatch is
  a :class:`~consentry.errors.LogIntegrityError`, never served.
"""

from __future__ import annotations

from consentry.errors import LogIntegrityError, NotFoundError
from consentry.registry.models import ManifestStore
from consentry.registry.signing import sha256_hex
from consentry.registry.statements import format_time
from consentry.registry.store import Registry

__all__ = ["keep_manifest_store", "manifest_store_of", "store_id"]


def store_id(decision_id: str, output_index: int) -> str:
    return f"{decision_id}/{output_index}"


def keep_manifest_store(
    registry: Registry, decision_id: str, output_index: int, data: bytes
) -> None:
    """Keep the signed manifest store of output ``output_index`` of ``decision_id``."""
    key = store_id(decision_id, output_index)
    with registry.db.write() as session:
        if session.get(ManifestStore, key) is not None:
            return
        session.add(
            ManifestStore(
                id=key,
                decision_id=decision_id,
                output_index=output_index,
                sha256=sha256_hex(data),
                data=data,
                created_at=format_time(registry.now()),
            )
        )


def manifest_store_of(registry: Registry, decision_id: str, output_index: int = 0) -> bytes:
    """The kept manifest store; NotFoundError if none was kept."""
    with registry.db.read() as session:
        row = session.get(ManifestStore, store_id(decision_id, output_index))
    if row is None:
        raise NotFoundError(f"no manifest store kept for {store_id(decision_id, output_index)}")
    if sha256_hex(row.data) != row.sha256:
        raise LogIntegrityError(f"the manifest store of {row.id} was altered")
    return bytes(row.data)
