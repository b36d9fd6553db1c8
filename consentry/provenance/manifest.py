"""The C2PA manifest every released output carries: AI-made, from which prior, under what consent.

One manifest definition per output (:func:`build_manifest`), for c2pa-python's ``Builder``:

- ``c2pa.actions.v2``: a generation is ``c2pa.created`` with IPTC digital source type
  ``trainedAlgorithmicMedia``; a restoration is ``c2pa.opened`` (the input image, a
  ``parentOf`` ingredient) then ``c2pa.edited`` with ``compositeWithTrainedAlgorithmicMedia``.
  The generating action lists the prior ingredient (``parameters.ingredientIds``).
- ingredients: the personalised prior as an ``inputTo`` ingredient. A prior is not an
  image and may be gigabytes, so it is *declared* in the manifest JSON (not streamed):
  title, format ``application/octet-stream``, ``data_types`` ``c2pa.types.model``, and its
  kind and SHA-256 under ``metadata["org.consentry.prior"]`` (c2pa-rs keeps extra
  metadata fields in the signed ingredient assertion). A ``data`` reference would make
  c2pa embed the file, so none is given. The restoration's input image is streamed
  through ``Builder.add_ingredient`` (``sign_asset(..., ingredient_data=...)``) so c2pa
  hashes it and keeps any manifest it carries.
- ``cawg.training-mining``: every entry ``notAllowed``.
- ``c2pa.soft-binding`` (one per algorithm, when the output was marked): the ISCC
  image code, PDQ and the watermark's release id (:mod:`consentry.provenance.marks`),
  what finds the decision again once the manifest is stripped.
- ``org.consentry.consent``: the decision id, grant ids, pseudonymous subject ids,
  the prior's SHA-256, the registry key id, the decision's log index, the checkpoint
  signed right after the decision, and the inclusion proof of the decision's leaf.

Privacy: the media never carry registry subject ids. A subject appears as
HMAC-SHA256(subject id) under a key derived from the registry's master key
(``master_key.derive("pseudonym")``), which only the registry can recompute. For the
same reason the inclusion proof carries the leaf's *hash*, not the leaf (whose signed
statement names the subjects): the verifying registry reads the leaf from its own log.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib.metadata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from consentry.errors import ManifestError
from consentry.provenance.c2pa_io import ACTIONS_LABEL, SUPPORTED_MIME_TYPES
from consentry.registry.models import Decision, Grant, Prior

if TYPE_CHECKING:
    from consentry.registry.store import Registry

__all__ = [
    "COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA",
    "CONSENT_LABEL",
    "CONSENT_VERSION",
    "PARENT_LABEL",
    "PRIOR_LABEL",
    "TRAINED_ALGORITHMIC_MEDIA",
    "TRAINING_MINING_LABEL",
    "Action",
    "ConsentEvidence",
    "build_manifest",
    "collect_evidence",
    "pseudonym_key",
    "subject_pseudonym",
]

Action = Literal["generate", "restore"]

TRAINED_ALGORITHMIC_MEDIA = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA = (
    "http://cv.iptc.org/newscodes/digitalsourcetype/compositeWithTrainedAlgorithmicMedia"
)
CONSENT_LABEL = "org.consentry.consent"
CONSENT_VERSION = 1
TRAINING_MINING_LABEL = "cawg.training-mining"
TRAINING_MINING_ENTRIES = (
    "cawg.ai_generative_training",
    "cawg.ai_inference",
    "cawg.ai_training",
    "cawg.data_mining",
)
PRIOR_LABEL = "prior"
PARENT_LABEL = "parent"
PRIOR_METADATA = "org.consentry.prior"
PARENT_METADATA = "org.consentry.input"
try:
    _VERSION = importlib.metadata.version("consentry")
except importlib.metadata.PackageNotFoundError:  # running from a source tree
    _VERSION = "0+unknown"
_GENERATOR = {"name": "consentry", "version": _VERSION}


def pseudonym_key(registry: Registry) -> bytes:
    """The registry's key for subject pseudonyms (derived from its master key)."""
    return registry.master_key.derive("pseudonym")


def subject_pseudonym(key: bytes, subject_id: str) -> str:
    """HMAC-SHA256 of ``subject_id`` under ``key``, in hex: what the media carry."""
    return hmac.new(key, subject_id.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class ConsentEvidence:
    """Where a decision stands in the log at signing time.

    ``checkpoint``: the signed checkpoint note taken right after the decision;
    ``index``/``tree_size``/``leaf_hash``/``hashes``: the inclusion proof of the
    decision's leaf in that checkpoint's tree; ``key_id``: the operator key that
    signed it; ``subjects``: the decision's subjects as pseudonyms, in its order.
    """

    key_id: str
    checkpoint: str
    index: int
    tree_size: int
    leaf_hash: str
    hashes: tuple[str, ...]
    subjects: tuple[str, ...]

    def proof_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "tree_size": self.tree_size,
            "leaf_hash": self.leaf_hash,
            "hashes": list(self.hashes),
        }


def collect_evidence(
    registry: Registry, decision: Decision, note: str | None = None
) -> ConsentEvidence:
    """Prove the decision's leaf in ``note`` (a signed checkpoint covering it; default:
    one signed now)."""
    if decision.log_index < 0:
        raise ManifestError(f"decision {decision.id} is not in the log")
    note = note or registry.checkpoint()
    proof = registry.inclusion_proof(decision.log_index, note)
    key = pseudonym_key(registry)
    return ConsentEvidence(
        key_id=registry.key_id,
        checkpoint=note,
        index=proof.index,
        tree_size=proof.tree_size,
        leaf_hash=proof.leaf_hash.hex(),
        hashes=tuple(h.hex() for h in proof.hashes),
        subjects=tuple(subject_pseudonym(key, s) for s in decision.subjects),
    )


def _prior_ingredient(prior: Prior) -> dict[str, Any]:
    return {
        "title": f"personalised prior ({prior.kind})",
        "format": "application/octet-stream",
        "relationship": "inputTo",
        "label": PRIOR_LABEL,
        "description": f"{prior.kind} prior for base model {prior.base_model_id}",
        "data_types": [{"type": "c2pa.types.model"}],
        "metadata": {
            PRIOR_METADATA: {
                "kind": prior.kind,
                "base_model": prior.base_model_id,
                "sha256": prior.sha256,
                "size": prior.size,
            }
        },
    }


def _parent_ingredient(parent: bytes, parent_mime: str) -> dict[str, Any]:
    return {
        "title": "input image",
        "format": parent_mime,
        "relationship": "parentOf",
        "label": PARENT_LABEL,
        "metadata": {PARENT_METADATA: {"sha256": hashlib.sha256(parent).hexdigest()}},
    }


def _actions(action: Action, decision: Decision, prior: Prior | None) -> list[dict[str, Any]]:
    uses = {"parameters": {"ingredientIds": [PRIOR_LABEL]}} if prior is not None else {}
    note = f"under consent decision {decision.id}"
    if action == "generate":
        return [
            {
                "action": "c2pa.created",
                "digitalSourceType": TRAINED_ALGORITHMIC_MEDIA,
                "softwareAgent": dict(_GENERATOR),
                "description": f"generated with a personalised prior {note}",
                **uses,
            }
        ]
    return [
        {"action": "c2pa.opened", "parameters": {"ingredientIds": [PARENT_LABEL]}},
        {
            "action": "c2pa.edited",
            "digitalSourceType": COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA,
            "softwareAgent": dict(_GENERATOR),
            "description": f"restored with a personalised prior {note}",
            **uses,
        },
    ]


def _consent(
    decision: Decision,
    grants: Sequence[Grant],
    prior: Prior | None,
    consent: ConsentEvidence,
    memorization: Mapping[str, Any] | None,
) -> dict[str, Any]:
    extra = {"memorization": dict(memorization)} if memorization is not None else {}
    return extra | {
        "version": CONSENT_VERSION,
        "decision": decision.id,
        "purpose": decision.purpose,
        "grants": [g.id for g in grants],
        "subjects": list(consent.subjects),
        "prior_sha256": prior.sha256 if prior is not None else None,
        "registry_key_id": consent.key_id,
        "log_index": decision.log_index,
        "checkpoint": consent.checkpoint,
        "inclusion_proof": consent.proof_json(),
    }


def build_manifest(
    action: Action,
    *,
    title: str,
    decision: Decision,
    grants: Sequence[Grant],
    prior: Prior | None,
    consent: ConsentEvidence,
    parent: bytes | None = None,
    parent_mime: str | None = None,
    memorization: Mapping[str, Any] | None = None,
    soft_bindings: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """The manifest definition for one output (see the module docstring).

    ``soft_bindings``: the output's ``c2pa.soft-binding`` assertions (its watermark
    and fingerprints, :func:`consentry.provenance.marks.soft_bindings`), added as given.

    ``memorization``: the output's memorization check (copy SSIM and identity to the
    nearest photo of the prior, and the limit), recorded in the consent assertion.

    A restoration needs ``parent`` (the input image, JPEG/PNG/WebP) and its
    ``parent_mime``; a generation takes none. The parent ingredient is declared with
    label :data:`PARENT_LABEL`: pass its bytes to ``sign_asset`` as
    ``ingredient_data={PARENT_LABEL: (parent_mime, parent)}``. The ``format`` is set
    by ``sign_asset``. Raises ManifestError on inconsistent arguments.
    """
    if action not in ("generate", "restore"):
        raise ManifestError(f"unknown action {action!r}: generate or restore")
    if action == "restore":
        if parent is None or parent_mime is None:
            raise ManifestError("a restoration needs its input image (parent and parent_mime)")
        if parent_mime not in SUPPORTED_MIME_TYPES:
            raise ManifestError(f"the input image is {parent_mime!r}, not JPEG, PNG or WebP")
    elif parent is not None:
        raise ManifestError("a generation has no input image")
    if consent.index != decision.log_index:
        raise ManifestError(
            f"the inclusion proof is for log index {consent.index}, "
            f"the decision is at {decision.log_index}"
        )
    if prior is not None and decision.prior_sha256 not in (None, prior.sha256):
        raise ManifestError(f"prior {prior.id} is not the prior of decision {decision.id}")
    ingredients = [_prior_ingredient(prior)] if prior is not None else []
    if action == "restore":
        assert parent is not None and parent_mime is not None
        ingredients.append(_parent_ingredient(parent, parent_mime))
    training = {name: {"use": "notAllowed"} for name in TRAINING_MINING_ENTRIES}
    return {
        "claim_generator_info": [dict(_GENERATOR)],
        "title": title,
        "format": parent_mime if parent_mime is not None else "image/jpeg",
        "ingredients": ingredients,
        "assertions": [
            {"label": ACTIONS_LABEL, "data": {"actions": _actions(action, decision, prior)}},
            {"label": TRAINING_MINING_LABEL, "data": {"entries": training}},
            {
                "label": CONSENT_LABEL,
                "data": _consent(decision, grants, prior, consent, memorization),
            },
            *(dict(binding) for binding in soft_bindings),
        ],
    }
