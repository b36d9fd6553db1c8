"""Sign a released output: C2PA manifest with the consent evidence of its decision."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from consentry.errors import ManifestError, ProvenanceError
from consentry.media import mime_of_bytes
from consentry.provenance.c2pa_io import sign_asset_and_store
from consentry.provenance.certs import load_signing_identity
from consentry.provenance.chain import check_signing_chain
from consentry.provenance.manifest import (
    PARENT_LABEL,
    Action,
    build_manifest,
    collect_evidence,
)
from consentry.provenance.manifest_store import keep_manifest_store
from consentry.provenance.marks import soft_bindings
from consentry.provenance.signer import ManifestSigner, signer_from_identity
from consentry.registry.models import Decision, Grant, Prior

if TYPE_CHECKING:
    from consentry.registry.store import Registry

__all__ = ["sign_output"]


def _check_matches(
    action: Action, decision: Decision, grants: Sequence[Grant], prior: Prior | None
) -> None:
    if not decision.allowed:
        raise ProvenanceError(f"decision {decision.id} refused the request: nothing to sign")
    if decision.purpose != action:
        raise ManifestError(f"decision {decision.id} allowed {decision.purpose!r}, not {action!r}")
    if sorted(g.id for g in grants) != sorted(decision.grants):
        raise ManifestError(f"the grants given are not those of decision {decision.id}")
    given = prior.sha256 if prior is not None else None
    if given != decision.prior_sha256:
        raise ManifestError(f"the prior given is not the prior of decision {decision.id}")


def _bindings(decision: Decision, output_index: int | None) -> list[dict[str, Any]]:
    marks = decision.marks
    if output_index is None or not marks:
        return []
    if not 0 <= output_index < len(marks):
        raise ManifestError(f"decision {decision.id} has no output {output_index}")
    return soft_bindings(decision.release_id, marks[output_index])


def sign_output(
    registry: Registry,
    data: bytes,
    mime: str,
    *,
    action: Action,
    decision: Decision,
    grants: Sequence[Grant],
    prior: Prior | None,
    parent: bytes | None = None,
    title: str | None = None,
    signer: ManifestSigner | None = None,
    memorization: Mapping[str, Any] | None = None,
    checkpoint_note: str | None = None,
    output_index: int | None = None,
) -> bytes:
    """Return ``data`` (JPEG, PNG or WebP) with its signed C2PA manifest embedded.

    ``decision`` must be an allowed decision already in the log, for this ``action``,
    these ``grants`` and this ``prior``. ``checkpoint_note``: a signed checkpoint
    covering it (the gateway's, from its checkpointer's cadence); without one a
    checkpoint is signed now. The decision's inclusion proof against that checkpoint
    goes into the ``org.consentry.consent`` assertion.
    ``parent``: the input image of a restoration. ``memorization``: the output's
    memorization check, recorded in the consent assertion. ``signer`` defaults to the home's
    active identity (``HOME/pki``). ``output_index``: which of the decision's outputs
    ``data`` is; its marks (release id, fingerprints) become ``c2pa.soft-binding``
    assertions. Raises CertificateError for an unusable chain
    (expired, ...), ManifestError or ProvenanceError otherwise.
    """
    _check_matches(action, decision, grants, prior)
    if signer is None:
        signer = signer_from_identity(load_signing_identity(registry.home.root))
    check_signing_chain(signer.chain_pem)  # refuse before a checkpoint is signed for nothing
    parent_mime = mime_of_bytes(parent) if parent is not None else None
    evidence = collect_evidence(registry, decision, checkpoint_note)
    manifest = build_manifest(
        action,
        title=title or ("generated image" if action == "generate" else "restored image"),
        decision=decision,
        grants=list(grants),
        prior=prior,
        consent=evidence,
        parent=parent,
        parent_mime=parent_mime,
        memorization=memorization,
        soft_bindings=_bindings(decision, output_index),
    )
    streams = (
        {PARENT_LABEL: (parent_mime, parent)}
        if parent is not None and parent_mime is not None
        else None
    )
    signed, store = sign_asset_and_store(data, mime, manifest, signer, ingredient_data=streams)
    if output_index is not None and store:
        keep_manifest_store(registry, decision.id, output_index, store)
    return signed
