"""Exemplar priors: a subject's own kept enrollment photos, registered as a prior.

An exemplar prior is not weights but a *manifest*: canonical JSON naming the
subject and the SHA-256 of each aligned photo it uses. The manifest's SHA-256 is
the prior's registered hash, so a grant that names it covers exactly those photos.

Invariants
- The photos stay encrypted in the vault; the manifest holds hashes only. They are
  decrypted in memory when a job runs, never written out.
- Loading re-hashes the manifest file (a swapped file is refused) and requires every
  listed photo to still be in the vault: after an erasure, or if one photo is
  missing, the prior is unusable (the job is refused), never silently reduced.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from consentry.errors import InputError, PriorHashMismatchError, RegistryError
from consentry.fsutil import atomic_write
from consentry.registry.biometrics import decrypt_photos
from consentry.registry.models import Prior
from consentry.registry.prior_files import prior_store_path
from consentry.registry.signing import canonical_json
from consentry.registry.store import Registry

__all__ = [
    "MANIFEST_TYPE",
    "ExemplarSet",
    "exemplar_manifest",
    "load_exemplars",
    "register_exemplars",
]

MANIFEST_TYPE = "consentry.exemplars"
_MAX_MANIFEST_BYTES = 1 << 20


@dataclass(frozen=True, eq=False)
class ExemplarSet:
    """A verified exemplar prior: the subject, and the photos (aligned RGB, in memory)."""

    subject_id: str
    photo_sha256: tuple[str, ...]
    photos: tuple[np.ndarray, ...]


def exemplar_manifest(subject_id: str, photo_sha256: list[str]) -> bytes:
    """The canonical manifest bytes for ``subject_id``'s photos (sorted hashes)."""
    if not photo_sha256:
        raise InputError("an exemplar prior needs at least one kept photo")
    return canonical_json(
        {
            "type": MANIFEST_TYPE,
            "version": 1,
            "subject": subject_id,
            "photos": sorted(set(photo_sha256)),
        }
    )


def register_exemplars(registry: Registry, subject: str) -> Prior:
    """Register the subject's kept photos as an ``exemplars`` prior.

    The manifest is written to the registry's prior store (``<sha256>.json``) before
    the prior is logged, so a logged prior always has its file.
    """
    row = registry.get_subject(subject)
    photos = decrypt_photos(registry, row.id)
    if not photos:
        raise InputError(f"subject {row.id} has no kept photos: enroll with --keep-photos first")
    hashes = sorted({sha for sha, _ in photos})
    manifest = exemplar_manifest(row.id, hashes)
    digest = hashlib.sha256(manifest).hexdigest()
    path = prior_store_path(registry, digest, "exemplars")
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        atomic_write(path, manifest, 0o644)
    return registry.add_prior(
        row.id, "exemplars", "", path, details={"photos": hashes, "count": len(hashes)}
    )


def load_exemplars(registry: Registry, path: Path, expected_sha256: str) -> ExemplarSet:
    """Read and verify an exemplar manifest, then decrypt exactly its photos."""
    try:
        with path.open("rb") as handle:
            data = handle.read(_MAX_MANIFEST_BYTES + 1)
    except OSError as exc:
        raise InputError(f"cannot read the exemplar manifest {path}: {exc.strerror}") from exc
    if len(data) > _MAX_MANIFEST_BYTES:
        raise InputError(f"exemplar manifest {path} is too large")
    actual = hashlib.sha256(data).hexdigest()
    if not hmac.compare_digest(actual, expected_sha256):
        raise PriorHashMismatchError(path, expected_sha256, actual)
    try:
        manifest = json.loads(data)
        subject_id = str(manifest["subject"])
        wanted = [str(h) for h in manifest["photos"]]
        if manifest.get("type") != MANIFEST_TYPE or manifest.get("version") != 1:
            raise ValueError("not an exemplar manifest")
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(f"exemplar manifest {path} is malformed: {exc}") from exc
    if canonical_json(manifest) != data:
        raise InputError(f"exemplar manifest {path} is not canonical JSON")
    kept = dict(decrypt_photos(registry, subject_id))
    missing = [h for h in wanted if h not in kept]
    if missing:
        raise RegistryError(
            f"{len(missing)} of {len(wanted)} exemplar photos are no longer in the vault "
            "(erased or re-enrolled): the prior cannot be used"
        )
    photos = tuple(
        np.asarray(Image.open(io.BytesIO(kept[h])).convert("RGB"), dtype=np.uint8) for h in wanted
    )
    return ExemplarSet(subject_id, tuple(wanted), photos)
