"""Verify a released output: its C2PA manifest, then the consent it claims.

:func:`verify_media` passes (``ok``) only when both hold:

1. **C2PA**: the manifest validates and its chain ends at this registry's root
   (the active identity's root in ``HOME/pki``): state ``"trusted"``, nothing less.
2. **Consent** (the ``org.consentry.consent`` assertion of that trusted manifest):

   - its checkpoint is signed by one of the registry's operator keys, for this log's
     origin, and is consistent with the registry's log now (its root is the root of
     the log's first ``tree_size`` entries);
   - the inclusion proof leads from the leaf at ``log_index`` of this log to that
     checkpoint's root, and that leaf is the decision named, signed by an operator key;
   - the decision was an ``allow``, and the assertion's purpose, grants, prior and
     (pseudonymous) subjects are the decision's;
   - every grant was valid at the decision's log index (appended before it, in its
     time window at the decision time, not revoked before it), is for the decision's
     grantee and purpose, every subject has one, and one of them names the prior.

Every registry fact used here (operator keys, the key in force at the decision's
index, grants, revocations, subjects) comes from the signed log as followed by
``registry.consent``, never from rows: a widened, re-pointed or forged grant row
changes nothing. A log that does not verify raises :class:`LogIntegrityError`.

A revocation appended after the decision does not fail an output released under it:
consent is judged at the time of the decision.

A file without a valid manifest (none, or one that does not validate) is tried for
recovery (:mod:`consentry.provenance.recover`): when its watermark, the signed
decision it names and its fingerprint agree, and that decision's grants were valid
at its index, the result is ``recovered`` ("provenance recovered, manifest
stripped") with the decision's findings; ``ok`` stays False.

A failed result carries no claimed decision, grants or subjects as findings: what
the manifest claimed is kept apart, under ``claimed``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from consentry.errors import (
    CheckpointError,
    ConsentryError,
    ImageError,
    ImageTooLargeError,
    LogIntegrityError,
)
from consentry.faces.images import BYTES_SOURCE, load_image_bytes
from consentry.media import MAX_BYTES_DEFAULT, mime_of, mime_of_bytes, read_capped
from consentry.provenance.c2pa_io import ManifestState, read_asset
from consentry.provenance.certs import root_pem
from consentry.provenance.manifest import (
    CONSENT_LABEL,
    CONSENT_VERSION,
    pseudonym_key,
    subject_pseudonym,
)
from consentry.provenance.recover import recover_release
from consentry.registry import checkpoint as cp
from consentry.registry.consent import ConsentState
from consentry.registry.offline import verify_inclusion_bundle
from consentry.registry.signing import Envelope, checkpoint_key_name, parse_canonical

if TYPE_CHECKING:
    from consentry.registry.store import Registry

__all__ = [
    "VerifyResult",
    "mime_of",
    "mime_of_bytes",
    "read_capped",
    "read_media",
    "verify_media",
]


@dataclass
class VerifyResult:
    """What :func:`verify_media` found; ``ok`` iff C2PA is ``trusted`` and consent holds.

    ``decision_id``, ``log_index``, ``grant_ids``, ``subject_ids`` and ``memorization``
    are findings: set only when consent held. ``claimed`` is what the consent
    assertion said (decision, log index, grants, subject pseudonyms, memorization),
    verified or not: on a failed result it is an unproven claim, nothing more.
    """

    ok: bool
    c2pa_state: ManifestState
    codes: list[str] = field(default_factory=list)
    consent_ok: bool = False
    consent_reason: str = ""
    decision_id: str | None = None
    grant_ids: list[str] = field(default_factory=list)
    subject_ids: list[str] = field(default_factory=list)
    log_index: int | None = None
    memorization: dict[str, Any] | None = None  # from the verified consent assertion
    claimed: dict[str, Any] = field(default_factory=dict)
    # the manifest's c2pa.soft-binding assertions ({"alg", "value"}), as signed in it
    soft_bindings: list[dict[str, Any]] = field(default_factory=list)
    # no valid manifest, but the watermark and fingerprint led to a consented release
    # (``ok`` stays False: the file carries no credentials; the findings are set)
    recovered: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class _ConsentFailedError(Exception):
    """One consent rule failed; the message is the reason reported."""


# -- input -------------------------------------------------------------------------------
# ``mime_of_bytes``, ``mime_of`` and ``read_capped`` live in :mod:`consentry.media` and are
# re-exported here, where callers have always found them.


def read_media(path: Path | str, max_bytes: int = MAX_BYTES_DEFAULT) -> tuple[bytes, str]:
    """Read an image file to verify: size cap, magic bytes, and a safe decode.

    Returns ``(data, mime)``; raises an ImageError subclass (exit code 2) for anything
    that is not a readable JPEG, PNG or WebP within the limits.
    """
    data = read_capped(Path(path), max_bytes)
    try:
        mime = mime_of_bytes(data)
        load_image_bytes(data, max_bytes=max_bytes)
    except ImageError as exc:  # the same error, naming the file instead of "<bytes>"
        reason = str(exc).removeprefix(f"{BYTES_SOURCE}: ")
        raise type(exc)(f"{path}: {reason}", hint=exc.hint) from exc
    return data, mime


# -- consent -----------------------------------------------------------------------------


def _field(data: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = data.get(name)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise _ConsentFailedError(f"the consent assertion's {name!r} is missing or malformed")
    return value


def _str_list(data: dict[str, Any], name: str) -> list[str]:
    value = _field(data, name, list)
    if not all(isinstance(v, str) for v in value):
        raise _ConsentFailedError(f"the consent assertion's {name!r} is malformed")
    return list(value)


def _checkpoint(
    note: str, origin: str, keys: dict[str, Ed25519PublicKey]
) -> tuple[cp.Checkpoint, str]:
    """The checkpoint, verified under one of this registry's keys, and that key's id."""
    try:
        _, signatures = cp.parse_checkpoint(note)
        names = {s.key_name for s in signatures}
        for key_id, public in keys.items():
            if checkpoint_key_name(key_id) in names:
                checkpoint = cp.verify_checkpoint(note, checkpoint_key_name(key_id), public)
                if checkpoint.origin != origin:
                    raise _ConsentFailedError(
                        f"the checkpoint is of log {checkpoint.origin!r}, not this registry's"
                    )
                return checkpoint, key_id
    except CheckpointError as exc:
        raise _ConsentFailedError(f"the checkpoint does not verify: {exc}") from exc
    raise _ConsentFailedError("the checkpoint is not signed by this registry (another log?)")


def _check_log(registry: Registry, checkpoint: cp.Checkpoint) -> None:
    root = registry.log.prefix_root(checkpoint.tree_size)
    if root is None:
        raise _ConsentFailedError(
            f"the checkpoint covers {checkpoint.tree_size} entries but this registry's log "
            f"has {registry.log_size()} (truncated log?)"
        )
    if root != checkpoint.root_hash:
        raise _ConsentFailedError(
            f"the checkpoint of size {checkpoint.tree_size} is not consistent with this "
            "registry's log (rewritten log or split view)"
        )


def _decision_statement(
    registry: Registry, state: ConsentState, claim: dict[str, Any]
) -> dict[str, Any]:
    keys = state.operator_keys()
    decision_id = _field(claim, "decision", str)
    index = _field(claim, "log_index", int)
    proof = _field(claim, "inclusion_proof", dict)
    note = _field(claim, "checkpoint", str)
    checkpoint, key_id = _checkpoint(note, registry.origin, keys)
    if proof.get("index") != index:
        raise _ConsentFailedError("the inclusion proof is not for the decision's log index")
    if not 0 <= index < checkpoint.tree_size:
        raise _ConsentFailedError(f"log index {index} is outside the checkpoint's tree")
    if index >= state.size:
        raise _ConsentFailedError(f"log index {index} is not in this registry's signed log")
    _check_log(registry, checkpoint)
    leaf = registry.entry(index).leaf_json
    bundle = {**proof, "checkpoint": note, "leaf": leaf}
    if "leaf_hash" not in proof:
        raise _ConsentFailedError("the inclusion proof has no leaf hash")
    try:
        verify_inclusion_bundle(bundle, [keys[key_id]])
    except ConsentryError as exc:
        raise _ConsentFailedError(f"the inclusion proof does not verify: {exc}") from exc
    try:
        body = parse_canonical(leaf.encode())
        envelope = Envelope.from_json(body.get("envelope", {}))
        active = state.key_active_at(index)
        if active is None or active not in envelope.key_ids:
            raise _ConsentFailedError(
                f"log entry {index} is not signed by the operator key in force at that index"
            )
        envelope.verify(keys, [active])
        statement = envelope.statement
    except ConsentryError as exc:
        raise _ConsentFailedError(f"log entry {index} does not verify: {exc}") from exc
    if body.get("kind") != "decision" or statement.get("type") != "consentry.decision":
        raise _ConsentFailedError(f"log entry {index} is a {body.get('kind')}, not a decision")
    if statement.get("id") != decision_id or body.get("id") != decision_id:
        raise _ConsentFailedError(
            f"log entry {index} is decision {statement.get('id')}, not {decision_id}"
        )
    return statement


def _resolve_subjects(registry: Registry, state: ConsentState, pseudonyms: list[str]) -> list[str]:
    key = pseudonym_key(registry)
    known = {subject_pseudonym(key, s.id): s.id for s in state.subjects_in_order()}
    missing = [p for p in pseudonyms if p not in known]
    if missing:
        raise _ConsentFailedError(f"subject {missing[0][:16]}... is not a subject of this registry")
    return [known[p] for p in pseudonyms]


def _check_grants(state: ConsentState, statement: dict[str, Any], index: int) -> None:
    """Each grant as signed in the log (never its row) was valid at ``index``."""
    at = str(statement.get("time"))
    covered: set[str] = set()
    priors: set[str] = set()
    for grant_id in statement.get("grants") or ():
        valid, why = state.grant_valid_at(str(grant_id), index, at)
        if not valid:
            raise _ConsentFailedError(why)
        grant = state.grants[str(grant_id)]
        if grant.grantee != statement.get("grantee"):
            raise _ConsentFailedError(f"grant {grant.id} is for another grantee")
        if statement.get("purpose") not in grant.purposes:
            raise _ConsentFailedError(f"grant {grant.id} does not cover {statement.get('purpose')}")
        covered.add(grant.subject)
        priors.update(grant.priors)
    for subject_id in statement.get("subjects") or ():
        if subject_id not in covered:
            raise _ConsentFailedError(f"subject {subject_id} has no grant in the decision")
    prior = statement.get("prior_sha256")
    if prior is not None and prior not in priors:
        raise _ConsentFailedError(f"no grant of the decision names prior {str(prior)[:16]}...")


def _claims(claim: Any) -> dict[str, Any]:
    """What the assertion claims, as given (unverified), for ``VerifyResult.claimed``."""
    if not isinstance(claim, dict):
        return {}
    names = ("decision", "log_index", "grants", "subjects", "purpose", "prior_sha256")
    found = {name: claim[name] for name in names if name in claim}
    if isinstance(claim.get("memorization"), dict):
        found["memorization"] = dict(claim["memorization"])
    return found


def _check_consent(registry: Registry, claim: Any, result: VerifyResult) -> None:
    """Raise _ConsentFailedError unless consent holds; on success fill the findings."""
    if not isinstance(claim, dict):
        raise _ConsentFailedError(f"the manifest has no {CONSENT_LABEL} assertion")
    result.claimed = _claims(claim)
    if claim.get("version") != CONSENT_VERSION:
        raise _ConsentFailedError(f"unknown consent assertion version {claim.get('version')!r}")
    decision_id = _field(claim, "decision", str)
    log_index = _field(claim, "log_index", int)
    grant_ids = _str_list(claim, "grants")
    pseudonyms = _str_list(claim, "subjects")
    state = registry.consent
    state.refresh()
    statement = _decision_statement(registry, state, claim)
    if statement.get("allowed") is not True:
        reasons = "; ".join(str(r) for r in statement.get("reasons") or ()) or "no reason"
        raise _ConsentFailedError(f"decision {decision_id} was a refusal ({reasons})")
    for name, logged in (
        ("purpose", statement.get("purpose")),
        ("grants", statement.get("grants")),
        ("prior_sha256", statement.get("prior_sha256")),
    ):
        if claim.get(name) != logged:
            raise _ConsentFailedError(f"the consent assertion's {name} do not match the decision's")
    subject_ids = _resolve_subjects(registry, state, pseudonyms)
    if subject_ids != list(statement.get("subjects") or ()):
        raise _ConsentFailedError("the consent assertion's subjects do not match the decision's")
    _check_grants(state, statement, log_index)
    claimed = claim.get("memorization")
    result.decision_id, result.log_index = decision_id, log_index
    result.grant_ids, result.subject_ids = grant_ids, subject_ids
    result.memorization = dict(claimed) if isinstance(claimed, dict) else None


def _soft_bindings(assertions: dict[str, Any]) -> list[dict[str, Any]]:
    """``alg`` and the first block's ``value`` of each ``c2pa.soft-binding`` assertion."""
    found: list[dict[str, Any]] = []
    for label, data in assertions.items():
        if label.split("__")[0] != "c2pa.soft-binding" or not isinstance(data, dict):
            continue
        blocks = data.get("blocks") or [{}]
        value = blocks[0].get("value") if isinstance(blocks[0], dict) else None
        found.append({"alg": data.get("alg"), "value": value})
    return found


def _recover(registry: Registry, data: bytes, result: VerifyResult) -> None:
    """Fill ``result`` from the release the pixels lead to (:mod:`recover`), when its
    grants were valid at its log index; else say why in ``consent_reason``."""
    try:
        found, why = recover_release(registry, load_image_bytes(data).pixels)
        if found is None:
            result.consent_reason += f"; no provenance recovered: {why}"
            return
        statement = found.statement
        _check_grants(registry.consent, statement, found.log_index)
    except _ConsentFailedError as exc:
        result.consent_reason += f"; release found, but its consent fails: {exc}"
        return
    except LogIntegrityError:
        raise
    except ConsentryError as exc:
        result.consent_reason += f"; no provenance recovered: {exc}"
        return
    result.recovered = result.consent_ok = True
    result.decision_id, result.log_index = str(statement["id"]), found.log_index
    result.grant_ids = [str(g) for g in statement.get("grants") or ()]
    result.subject_ids = [str(s) for s in statement.get("subjects") or ()]
    iscc, pdq = found.distances
    result.consent_reason = (
        f"provenance recovered, manifest stripped: decision {result.decision_id} at log "
        f"index {found.log_index} (output {found.output}, watermark {found.release_id}, "
        f"fingerprint ISCC {iscc}/64 and PDQ {pdq}/256 bits off); "
        f"{len(result.grant_ids)} grant(s) valid at that index"
    )


def verify_media(registry: Registry, data: bytes, mime: str) -> VerifyResult:
    """Check an output's C2PA manifest and its consent; see the module docstring.

    Never raises for a bad or hostile manifest (that is a failed result). Raises
    ImageTooLargeError for data over the size cap, ManifestError for an unsupported
    ``mime``, ConfigError when the registry has no root certificate, and
    LogIntegrityError when this registry's own log does not verify (exit code 2).
    """
    if len(data) > MAX_BYTES_DEFAULT:
        raise ImageTooLargeError(f"{len(data)} bytes, more than the limit of {MAX_BYTES_DEFAULT}")
    report = read_asset(data, mime, root_pem(registry.home.root))
    result = VerifyResult(ok=False, c2pa_state=report.state, codes=list(report.codes))
    if report.state != "trusted":
        why = {
            "none": "the image carries no C2PA manifest",
            "valid_untrusted": "the C2PA manifest is not signed by this registry's PKI",
            "invalid": "the C2PA manifest does not validate",
        }[report.state]
        result.consent_reason = f"not checked: {why}"
        if report.state in ("none", "invalid"):
            _recover(registry, data, result)
        return result
    try:
        if f"{CONSENT_LABEL}__2" in report.assertions:
            raise _ConsentFailedError(f"the manifest has more than one {CONSENT_LABEL} assertion")
        _check_consent(registry, report.assertions.get(CONSENT_LABEL), result)
    except _ConsentFailedError as exc:
        result.consent_reason = str(exc)
        return result
    except LogIntegrityError:
        raise
    except ConsentryError as exc:  # e.g. a log entry or grant the registry lacks
        result.consent_reason = f"consent check failed: {exc}"
        return result
    result.soft_bindings = _soft_bindings(report.assertions)
    result.consent_ok = True
    result.consent_reason = (
        f"decision {result.decision_id} at log index {result.log_index} allowed it; "
        f"{len(result.grant_ids)} grant(s) valid at that index"
    )
    result.ok = True
    return result
