"""Sign an image with a C2PA manifest, and read one back with a trust decision.

Nothing here is consent-specific. Two rules shape the API:

- **Only ``"trusted"`` is a pass.** c2pa reports ``Valid`` for a well-formed manifest
  whose chain ends at a root nobody vouched for (``signingCredential.untrusted``);
  :func:`read_asset` calls that ``"valid_untrusted"``. A reader gets ``"trusted"`` only
  when it passes the root it trusts (``trust_anchors_pem``, installed as c2pa's
  ``trust.user_anchors``) and c2pa reports ``Trusted`` with no failure code.
- **Reading never raises on hostile data.** No manifest is ``"none"``; a manifest that
  does not verify, or bytes c2pa cannot parse, is ``"invalid"`` with status codes.

Everything runs offline: no timestamp authority, no remote manifests, no OCSP. Without
a timestamp, c2pa validates the signer certificate at reading time, so an asset stops
verifying as trusted when its signer certificate expires.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import c2pa  # type: ignore[import-untyped, unused-ignore]
from cryptography import x509

from consentry.errors import CertificateError, ManifestError
from consentry.provenance.signer import ManifestSigner, _bridge

__all__ = [
    "SUPPORTED_MIME_TYPES",
    "TRAINED_ALGORITHMIC_MEDIA",
    "ManifestReport",
    "ManifestState",
    "minimal_manifest",
    "read_asset",
    "sign_asset",
    "sign_asset_and_store",
]

SUPPORTED_MIME_TYPES = ("image/jpeg", "image/png", "image/webp")
TRAINED_ALGORITHMIC_MEDIA = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
ACTIONS_LABEL = "c2pa.actions.v2"
#: The C2PA status code for an error no other code describes (used for unreadable data).
GENERAL_ERROR = "general.error"

ManifestState = Literal["none", "trusted", "valid_untrusted", "invalid"]

_OFFLINE_VERIFY = {
    "verify_after_reading": True,
    "verify_trust": True,
    "remote_manifest_fetch": False,
    "ocsp_fetch": False,
}


@dataclass(frozen=True)
class ManifestReport:
    """What :func:`read_asset` found.

    ``state``: ``"none"`` (no manifest), ``"trusted"``, ``"valid_untrusted"`` or
    ``"invalid"``. ``codes``: C2PA failure status codes (e.g. ``assertion.dataHash.mismatch``,
    ``signingCredential.untrusted``), in the order c2pa gave them. ``active_manifest``:
    the manifest store's active manifest as c2pa parses it; ``assertions``: its
    assertions by label. ``detail``: c2pa's message when the data could not be read.
    """

    state: ManifestState
    codes: list[str] = field(default_factory=list)
    active_manifest: dict[str, Any] | None = None
    assertions: dict[str, Any] = field(default_factory=dict)
    detail: str | None = None

    @property
    def trusted(self) -> bool:
        return self.state == "trusted"


def _check_mime(mime: str) -> str:
    name = mime.strip().lower()
    if name not in SUPPORTED_MIME_TYPES:
        allowed = ", ".join(SUPPORTED_MIME_TYPES)
        raise ManifestError(f"cannot embed a manifest in {mime!r}: only {allowed}")
    return name


# -- manifest definitions -----------------------------------------------------------------


def minimal_manifest(
    title: str,
    generator: str,
    actions: Iterable[Mapping[str, Any]] = (),
    assertions: Iterable[Mapping[str, Any]] = (),
    *,
    format: str = "image/jpeg",
) -> dict[str, Any]:
    """A C2PA v2 manifest definition for a generated image.

    The ``c2pa.actions.v2`` assertion starts with ``c2pa.created`` whose
    ``digitalSourceType`` is IPTC ``trainedAlgorithmicMedia`` (a caller's own first
    ``c2pa.created`` action is kept, with those defaults filled in); ``actions`` follow.
    ``assertions`` are extra ``{"label": ..., "data": ...}`` entries. ``generator`` may be
    ``"name/version"``. :func:`sign_asset` sets ``format`` to the signed asset's type.
    """
    name, _, version = generator.partition("/")
    if not name:
        raise ManifestError("the claim generator needs a name")
    info: dict[str, Any] = {"name": name}
    if version:
        info["version"] = version
    created: dict[str, Any] = {
        "action": "c2pa.created",
        "digitalSourceType": TRAINED_ALGORITHMIC_MEDIA,
        "softwareAgent": dict(info),
    }
    steps = [dict(step) for step in actions]
    for step in steps:
        if not isinstance(step.get("action"), str):
            raise ManifestError(f"an action needs an 'action' name: {step!r}")
    if steps and steps[0]["action"] == "c2pa.created":
        steps[0] = {**created, **steps[0]}
    else:
        steps.insert(0, created)
    if any(step["action"] == "c2pa.created" for step in steps[1:]):
        raise ManifestError("c2pa.created must be the first action, and only once")
    extra = [dict(assertion) for assertion in assertions]
    for assertion in extra:
        label = assertion.get("label")
        if not isinstance(label, str) or "data" not in assertion:
            raise ManifestError(f"an assertion needs a 'label' and 'data': {assertion!r}")
        if label.startswith("c2pa.actions"):
            raise ManifestError("pass actions through the 'actions' argument, not as assertions")
    return {
        "claim_generator_info": [info],
        "title": title,
        "format": format,
        "assertions": [{"label": ACTIONS_LABEL, "data": {"actions": steps}}, *extra],
    }


# -- signing ------------------------------------------------------------------------------


def sign_asset(
    data: bytes,
    mime: str,
    manifest: Mapping[str, Any],
    signer: ManifestSigner,
    thumbnail: bool = False,
    *,
    ingredient_data: Mapping[str, tuple[str, bytes]] | None = None,
) -> bytes:
    """Return ``data`` with ``manifest`` signed by ``signer`` embedded in it
    (:func:`sign_asset_and_store` without the manifest store)."""
    signed, _store = sign_asset_and_store(
        data, mime, manifest, signer, thumbnail, ingredient_data=ingredient_data
    )
    return signed


def sign_asset_and_store(
    data: bytes,
    mime: str,
    manifest: Mapping[str, Any],
    signer: ManifestSigner,
    thumbnail: bool = False,
    *,
    ingredient_data: Mapping[str, tuple[str, bytes]] | None = None,
) -> tuple[bytes, bytes]:
    """``data`` with ``manifest`` signed by ``signer`` embedded in it, and the signed
    C2PA manifest store itself (the JUMBF bytes embedded, ``application/c2pa``).

    ``mime`` is one of :data:`SUPPORTED_MIME_TYPES` (anything else: ManifestError).
    The signer's chain is checked first (CertificateError). Thumbnails are off unless
    asked for (they cost time and hundreds of KB per image). c2pa verifies the result
    after signing, so a signer that returns a wrong signature fails here.

    ``ingredient_data`` maps the ``label`` of an entry of the manifest's ``ingredients``
    to ``(mime, bytes)``: that ingredient is added from those bytes (c2pa hashes them
    and takes in any manifest they carry), e.g. the input image of an edit.
    """
    kind = _check_mime(mime)
    if not data:
        raise ManifestError("cannot sign an empty asset")
    definition = dict(manifest)
    definition["format"] = kind
    streamed: list[tuple[str, str, bytes]] = []
    if ingredient_data:
        declared = [dict(i) for i in definition.get("ingredients") or ()]
        labels = {i.get("label") for i in declared}
        missing = sorted(set(ingredient_data) - labels)
        if missing:
            raise ManifestError(f"no ingredient labelled {missing[0]!r} in the manifest")
        definition["ingredients"] = [i for i in declared if i.get("label") not in ingredient_data]
        for item in declared:
            if item.get("label") in ingredient_data:
                item_mime, item_data = ingredient_data[str(item["label"])]
                streamed.append((json.dumps(item), _check_mime(item_mime), item_data))
    try:
        definition_json = json.dumps(definition)
    except (TypeError, ValueError) as exc:
        raise ManifestError(f"the manifest is not JSON-serialisable: {exc}") from exc
    settings = {
        "builder": {"thumbnail": {"enabled": bool(thumbnail)}},
        "verify": {"verify_after_sign": True, **_OFFLINE_VERIFY},
    }
    native, bridge = _bridge(signer)
    out = io.BytesIO()
    try:
        with (
            native,
            c2pa.Context.from_dict(settings) as context,
            c2pa.Builder(definition_json, context=context) as builder,
        ):
            for item_json, item_mime, item_data in streamed:
                builder.add_ingredient(item_json, item_mime, io.BytesIO(item_data))
            store = builder.sign(native, kind, io.BytesIO(data), out)
    except c2pa.C2paError as exc:
        if bridge.error is not None:
            raise ManifestError(f"the signer failed: {bridge.error}") from bridge.error
        raise ManifestError(f"c2pa could not sign the {kind} asset: {exc}") from exc
    return out.getvalue(), bytes(store or b"")


# -- reading ------------------------------------------------------------------------------


def _anchor_text(trust_anchors_pem: bytes | None) -> str | None:
    if trust_anchors_pem is None:
        return None
    try:
        x509.load_pem_x509_certificates(trust_anchors_pem)
        return trust_anchors_pem.decode("ascii")
    except (ValueError, UnicodeDecodeError) as exc:
        raise CertificateError(f"the trust anchors are not PEM certificates: {exc}") from exc


def _codes(store: Mapping[str, Any]) -> list[str]:
    found: list[str] = []

    def take(entries: Any) -> None:
        for entry in entries or ():
            code = entry.get("code") if isinstance(entry, Mapping) else None
            if isinstance(code, str) and code not in found:
                found.append(code)

    take(store.get("validation_status"))
    results = store.get("validation_results") or {}
    take((results.get("activeManifest") or {}).get("failure"))
    for delta in results.get("ingredientDeltas") or ():
        take(((delta or {}).get("validationDeltas") or {}).get("failure"))
    return found


def _assertions(manifest: Mapping[str, Any]) -> dict[str, Any]:
    by_label: dict[str, Any] = {}
    for assertion in manifest.get("assertions") or ():
        if not isinstance(assertion, Mapping):
            continue
        label = str(assertion.get("label"))
        key, n = label, 1
        while key in by_label:
            n += 1
            key = f"{label}__{n}"
        by_label[key] = assertion.get("data")
    return by_label


def _report(store: Mapping[str, Any]) -> ManifestReport:
    codes = _codes(store)
    manifests = store.get("manifests") or {}
    active = manifests.get(store.get("active_manifest")) if isinstance(manifests, dict) else None
    active = active if isinstance(active, dict) else None
    assertions = _assertions(active) if active is not None else {}
    verdict = store.get("validation_state")
    state: ManifestState
    if verdict == "Trusted" and not codes and active is not None:
        state = "trusted"
    elif verdict == "Valid" and active is not None:
        state = "valid_untrusted"
    else:
        state = "invalid"
        if not codes:
            codes = [GENERAL_ERROR]
    return ManifestReport(state, codes, active, assertions)


def read_asset(data: bytes, mime: str, trust_anchors_pem: bytes | None) -> ManifestReport:
    """Read and validate the manifest embedded in ``data`` (see :class:`ManifestReport`).

    ``trust_anchors_pem``: the root certificate(s) this reader trusts (e.g. from
    :func:`~consentry.provenance.certs.export_root`); without them nothing is
    ``"trusted"``. Never raises for bad data; raises ManifestError for an unsupported
    ``mime`` and CertificateError for unparsable anchors.
    """
    kind = _check_mime(mime)
    anchors = _anchor_text(trust_anchors_pem)
    settings: dict[str, Any] = {"verify": dict(_OFFLINE_VERIFY)}
    if anchors is not None:
        settings["trust"] = {"user_anchors": anchors}
    try:
        context = c2pa.Context.from_dict(settings)
    except c2pa.C2paError as exc:
        raise ManifestError(f"c2pa rejected the reader settings: {exc}") from exc
    try:
        with context:
            reader = c2pa.Reader.try_create(kind, io.BytesIO(data), None, context)
            if reader is None:
                return ManifestReport("none")
            with reader:
                store = json.loads(reader.json())
    except c2pa.C2paError as exc:
        return ManifestReport(
            "invalid", [GENERAL_ERROR], detail=f"{type(exc).__name__.lstrip('_')}: {exc}"
        )
    except (ValueError, TypeError) as exc:
        return ManifestReport("invalid", [GENERAL_ERROR], detail=str(exc))
    if not isinstance(store, dict):
        return ManifestReport("invalid", [GENERAL_ERROR], detail="the manifest store is not JSON")
    return _report(store)
