"""One named test per attack on a released output; none of them may pass ``verify``.

Each output is signed the way the gateway signs it (``sign_output``): a decision in the
log, a checkpoint and inclusion proof, the consent assertion, the registry's dev PKI.
Each test asserts the C2PA status code or the consent reason that catches the attack.
The registry is the security suite's ``sqlite_world`` (alice holds a key; ``grant_a``
lets acme restore and generate with alice's prior; clock fixed at T0).
"""

from __future__ import annotations

import copy
import datetime as dt
import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from PIL import Image

from consentry.errors import CertificateError
from consentry.provenance.c2pa_io import read_asset, sign_asset
from consentry.provenance.certs import PkiPaths, create_dev_pki, load_signing_identity
from consentry.provenance.manifest import (
    CONSENT_LABEL,
    build_manifest,
    collect_evidence,
    pseudonym_key,
    subject_pseudonym,
)
from consentry.provenance.sign import sign_output
from consentry.provenance.signer import LocalKeySigner, signer_from_identity
from consentry.provenance.verify import VerifyResult, verify_media
from consentry.registry import checkpoint as cp
from consentry.registry.decisions import record_decision
from consentry.registry.models import Decision, Grant
from consentry.registry.signing import Envelope, checkpoint_key_name
from consentry.registry.statements import format_time, statement_of
from consentry.registry.store import Registry
from tests.security.conftest import PRIOR_SHA, World, append_leaf, new_id, raw_insert
from tests.support.media import make_image

JPEG = "image/jpeg"


def jpeg_segments(data: bytes) -> Iterator[tuple[int, int, int]]:
    """(offset, marker, total length incl. marker) for each header segment up to SOS."""
    pos = 2
    while pos < len(data):
        marker = data[pos + 1]
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        yield pos, marker, 2 + length
        if marker == 0xDA:
            return
        pos += 2 + length


@pytest.fixture
def w(sqlite_world: World) -> World:
    create_dev_pki(sqlite_world.registry.home.root)
    return sqlite_world


def pki_of(w: World) -> PkiPaths:
    return PkiPaths.of(w.registry.home.root)


def allow(w: World, grants: list[Grant] | None = None, purpose: str = "generate") -> Decision:
    chosen = [w.grant_a] if grants is None else grants
    return record_decision(
        w.registry, w.acme.id, purpose, True, ["consented"], [g.id for g in chosen],
        [w.alice.id], PRIOR_SHA, [], [],
    )  # fmt: skip


def missed_allow(w: World, grants: list[Grant], purpose: str = "generate") -> Decision:
    """An operator-signed allow that the gate's in-transaction re-check would refuse
    (``record_decision`` no longer logs it): what an older gateway that missed a
    revocation, or an insider holding the operator key, could have logged."""
    row = Decision(
        id="dec_" + new_id("x")[2:22],
        grantee_id=w.acme.id,
        purpose=purpose,
        allowed=True,
        reasons_json='["consented"]',
        grants_json=json.dumps([g.id for g in grants]),
        subjects_json=json.dumps([w.alice.id]),
        prior_sha256=PRIOR_SHA,
        inputs_json="[]",
        outputs_json="[]",
        created_at=format_time(w.clock()),
        log_index=-1,
    )
    append_leaf(
        w.registry, "decision", row.id, Envelope.sign(statement_of(row), [w.operator]),
        table="decisions", row=row,
    )  # fmt: skip
    return row


def release(w: World, decision: Decision, grants: list[Grant] | None = None) -> bytes:
    return sign_output(
        w.registry, make_image(), JPEG, action="generate", decision=decision,
        grants=[w.grant_a] if grants is None else grants, prior=w.prior,
    )  # fmt: skip


def forged_manifest(
    registry: Registry, decision: Decision, grants: list[Grant], w: World
) -> dict[str, Any]:
    """The manifest the gateway would build for ``decision``, evidence from ``registry``."""
    return build_manifest(
        "generate",
        title="forged",
        decision=decision,
        grants=grants,
        prior=w.prior if decision.prior_sha256 else None,
        consent=collect_evidence(registry, decision),
    )


def consent_data(manifest: dict[str, Any]) -> dict[str, Any]:
    (found,) = [a["data"] for a in manifest["assertions"] if a["label"] == CONSENT_LABEL]
    return found  # type: ignore[no-any-return]


def sign_with_registry_pki(w: World, manifest: dict[str, Any], seed: int = 0) -> bytes:
    """What an insider holding the registry's signing key (or a gateway bug) could do."""
    signer = signer_from_identity(load_signing_identity(w.registry.home.root))
    return sign_asset(make_image(seed=seed), JPEG, manifest, signer)


def assert_rejected(
    result: VerifyResult, state: str, code: str | None = None, reason: str | None = None
) -> None:
    assert not result.ok
    assert not result.consent_ok
    assert result.c2pa_state == state, (result.c2pa_state, result.codes)
    if code is not None:
        assert code in result.codes, result.codes
    if reason is not None:
        assert reason in result.consent_reason, result.consent_reason


def test_baseline_output_verifies(w: World) -> None:
    result = verify_media(w.registry, release(w, allow(w)), JPEG)
    assert result.ok, result
    assert result.subject_ids == [w.alice.id]


# -- attacks on the pixels and the manifest's binding -------------------------------------------


def test_pixels_edited_after_release(w: World) -> None:
    signed = release(w, allow(w))
    *_, (sos, _, sos_len) = jpeg_segments(signed)
    tampered = bytearray(signed)
    pos = sos + sos_len + 200
    while 0xFF in (tampered[pos - 1], tampered[pos], tampered[pos + 1]):
        pos += 1
    tampered[pos] ^= 0x01
    result = verify_media(w.registry, bytes(tampered), JPEG)
    assert_rejected(result, "invalid", "assertion.dataHash.mismatch", "not checked")


def test_manifest_stripped(w: World) -> None:
    out = io.BytesIO()
    Image.open(io.BytesIO(release(w, allow(w)))).save(out, "JPEG", quality=95)
    result = verify_media(w.registry, out.getvalue(), JPEG)
    assert_rejected(result, "none", reason="no C2PA manifest")
    assert result.codes == []


def test_manifest_moved_onto_another_image(w: World) -> None:
    signed = release(w, allow(w))
    jumbf = b"".join(signed[p : p + n] for p, marker, n in jpeg_segments(signed) if marker == 0xEB)
    assert jumbf
    victim = make_image(seed=7)
    first = next(jpeg_segments(victim))
    cut = first[0] + first[2] if first[1] == 0xE0 else 2
    result = verify_media(w.registry, victim[:cut] + jumbf + victim[cut:], JPEG)
    assert_rejected(result, "invalid", "assertion.dataHash.mismatch")


# -- attacks on the consent assertion -----------------------------------------------------------


def test_consent_assertion_edited_in_signed_bytes(w: World) -> None:
    decision, other = allow(w), allow(w)
    signed = release(w, decision)
    assert decision.id.encode() in signed and len(decision.id) == len(other.id)
    tampered = signed.replace(decision.id.encode(), other.id.encode())
    result = verify_media(w.registry, tampered, JPEG)
    assert_rejected(result, "invalid", "assertion.hashedURI.mismatch")


def test_consent_assertion_edited_and_signed_by_another_pki(w: World, tmp_path: Path) -> None:
    refused = record_decision(
        w.registry, w.acme.id, "generate", False, ["grant revoked"], [w.grant_r.id],
        [w.bob.id], None, [], [],
    )  # fmt: skip
    manifest = forged_manifest(w.registry, allow(w), [w.grant_a], w)
    consent_data(manifest)["decision"] = refused.id
    create_dev_pki(tmp_path / "other", org="Consentry dev")  # same names, other keys
    impostor = signer_from_identity(load_signing_identity(tmp_path / "other"))
    signed = sign_asset(make_image(), JPEG, manifest, impostor)
    result = verify_media(w.registry, signed, JPEG)
    assert_rejected(result, "valid_untrusted", "signingCredential.untrusted", "not checked")


def test_right_pki_but_consent_points_at_refused_decision(w: World) -> None:
    refused = record_decision(
        w.registry, w.acme.id, "generate", False, ["subject bob has no active grant"],
        [], [w.alice.id], PRIOR_SHA, [], [],
    )  # fmt: skip
    manifest = forged_manifest(w.registry, refused, [], w)
    result = verify_media(w.registry, sign_with_registry_pki(w, manifest), JPEG)
    assert result.c2pa_state == "trusted"
    assert_rejected(result, "trusted", reason=f"decision {refused.id} was a refusal")
    assert "subject bob has no active grant" in result.consent_reason


def _swap_decision(w: World, data: dict[str, Any]) -> None:
    data["decision"] = allow(w).id  # another allowed decision, at another index


def _point_at_other_entry(w: World, data: dict[str, Any]) -> None:
    data["log_index"] = data["inclusion_proof"]["index"] = w.index_of(w.grant_a.id)


def _other_subject(w: World, data: dict[str, Any]) -> None:
    data["subjects"] = [subject_pseudonym(pseudonym_key(w.registry), w.bob.id)]


def _unknown_subject(w: World, data: dict[str, Any]) -> None:
    data["subjects"] = ["00" * 32]


def _other_grant(w: World, data: dict[str, Any]) -> None:
    data["grants"] = [w.grant_r.id]


def _other_prior(w: World, data: dict[str, Any]) -> None:
    data["prior_sha256"] = "cd" * 32


def _split_view_checkpoint(w: World, data: dict[str, Any]) -> None:
    # a checkpoint properly signed by the operator key, of a tree this log never had
    real, _ = cp.parse_checkpoint(data["checkpoint"])
    fake = cp.Checkpoint(real.origin, real.tree_size, bytes(32), real.timestamp)
    name = checkpoint_key_name(w.operator.key_id)
    data["checkpoint"] = cp.sign_checkpoint(fake, name, w.operator.private_key)


def _proof_hash_flipped(w: World, data: dict[str, Any]) -> None:
    first = data["inclusion_proof"]["hashes"][0]
    data["inclusion_proof"]["hashes"][0] = ("0" if first[0] != "0" else "1") + first[1:]


def _no_consent(w: World, data: dict[str, Any]) -> None:
    data.clear()


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (_swap_decision, "is decision"),
        (_point_at_other_entry, "inclusion proof does not verify"),
        (_other_subject, "subjects do not match"),
        (_unknown_subject, "not a subject of this registry"),
        (_other_grant, "grants do not match"),
        (_other_prior, "prior_sha256 do not match"),
        (_split_view_checkpoint, "not consistent with this registry's log"),
        (_proof_hash_flipped, "inclusion proof does not verify"),
        (_no_consent, "unknown consent assertion version"),
    ],
    ids=lambda v: v.__name__.strip("_") if callable(v) else "",
)
def test_right_pki_but_consent_assertion_edited(
    w: World, mutate: Callable[[World, dict[str, Any]], None], reason: str
) -> None:
    manifest = forged_manifest(w.registry, allow(w), [w.grant_a], w)
    mutate(w, consent_data(manifest))
    result = verify_media(w.registry, sign_with_registry_pki(w, manifest), JPEG)
    assert_rejected(result, "trusted", reason=reason)


def test_inclusion_proof_from_another_log(w: World, tmp_path: Path) -> None:
    other = Registry.init(tmp_path / "other-home", f"sqlite:///{tmp_path / 'other.db'}")
    with other:
        subject = other.add_subject("Alice Example")
        grantee, _ = other.add_grantee("Acme Studios")
        grant = other.grant(subject.id, grantee.id, ["generate"])
        decision = record_decision(
            other, grantee.id, "generate", True, ["ok"], [grant.id], [subject.id], None, [], []
        )
        manifest = build_manifest(
            "generate",
            title="foreign consent",
            decision=decision,
            grants=[grant],
            prior=None,
            consent=collect_evidence(other, decision),
        )
    result = verify_media(w.registry, sign_with_registry_pki(w, manifest), JPEG)
    assert_rejected(result, "trusted", reason="checkpoint is not signed by this registry")


# -- attacks on the certificates ----------------------------------------------------------------


def test_resigned_by_another_ca(w: World, tmp_path: Path) -> None:
    signed = release(w, allow(w))
    root = pki_of(w).root_cert.read_bytes()
    original = read_asset(signed, JPEG, root).active_manifest
    assert original is not None
    manifest = {
        "claim_generator_info": [{"name": "consentry"}],
        "title": original["title"],
        "assertions": copy.deepcopy(original["assertions"]),
    }
    stripped = io.BytesIO()
    Image.open(io.BytesIO(signed)).save(stripped, "JPEG")
    create_dev_pki(tmp_path / "impostor", org="Consentry dev")
    impostor = signer_from_identity(load_signing_identity(tmp_path / "impostor"))
    resigned = sign_asset(stripped.getvalue(), JPEG, manifest, impostor)
    result = verify_media(w.registry, resigned, JPEG)
    assert_rejected(result, "valid_untrusted", "signingCredential.untrusted")


def _expired_signer(pki: PkiPaths) -> LocalKeySigner:
    inter = x509.load_pem_x509_certificate(pki.intermediate_cert.read_bytes())
    inter_key = serialization.load_pem_private_key(pki.intermediate_key.read_bytes(), None)
    assert isinstance(inter_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    not_after = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    usage = x509.KeyUsage(True, False, False, False, False, False, False, False, False)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "expired")]))
        .issuer_name(inter.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_after - dt.timedelta(days=30))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(inter_key.public_key()),
            critical=False,
        )
        .sign(inter_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    chain = cert.public_bytes(serialization.Encoding.PEM) + pki.intermediate_cert.read_bytes()
    return LocalKeySigner(key_pem, chain)


def test_certificate_expired_refuses_signing(w: World) -> None:
    decision = allow(w)
    size = w.registry.log_size()
    with pytest.raises(CertificateError, match="expired on"):
        sign_output(
            w.registry, make_image(), JPEG, action="generate", decision=decision,
            grants=[w.grant_a], prior=w.prior, signer=_expired_signer(pki_of(w)),
        )  # fmt: skip
    assert w.registry.log_size() == size


# -- consent at the time of the decision --------------------------------------------------------


def test_grant_revoked_before_the_decision(w: World) -> None:
    grant = w.registry.grant(w.alice.id, w.acme.id, ["generate"], subject_key=w.alice_key)
    revocation = w.registry.revoke(grant.id, "withdrawn", subject_key=w.alice_key)
    assert not allow(w, [grant]).allowed  # the gate's record re-checks: refused
    decision = missed_allow(w, [grant])  # a gateway that missed the revocation
    result = verify_media(w.registry, release(w, decision, [grant]), JPEG)
    assert_rejected(
        result, "trusted", reason=f"revoked at log index {revocation.log_index}, before"
    )


def test_revocation_after_the_decision_keeps_the_output_valid(w: World) -> None:
    signed = release(w, allow(w))
    w.clock.advance(days=1)
    w.registry.revoke(w.grant_a.id, "withdrawn later", subject_key=w.alice_key)
    result = verify_media(w.registry, signed, JPEG)
    assert result.ok, result.consent_reason  # consent is judged at the time
    later = missed_allow(w, [w.grant_a])  # a decision after the revocation does not stand
    assert_rejected(verify_media(w.registry, release(w, later), JPEG), "trusted", reason="revoked")


def test_grant_expired_at_the_decision_time(w: World) -> None:
    w.clock.advance(days=31)  # grant_a ends at T0 + 30 days
    result = verify_media(w.registry, release(w, missed_allow(w, [w.grant_a])), JPEG)
    assert_rejected(result, "trusted", reason="had expired")


def test_decision_for_a_purpose_the_grant_lacks(w: World) -> None:
    grant = w.registry.grant(w.alice.id, w.acme.id, ["restore"], subject_key=w.alice_key)
    decision = allow(w, [grant])
    result = verify_media(w.registry, release(w, decision, [grant]), JPEG)
    assert_rejected(result, "trusted", reason="does not cover generate")


# -- decisions in the log -----------------------------------------------------------------------


@pytest.mark.parametrize("named", ["grants", "subjects", "grantee"])
def test_logged_decision_naming_records_not_earlier_in_the_log(w: World, named: str) -> None:
    """An operator-signed decision leaf naming a record the log does not (yet) hold."""
    row = Decision(
        id="dec_" + "0" * 20,
        grantee_id=w.acme.id,
        purpose="generate",
        allowed=True,
        reasons_json="[]",
        grants_json=json.dumps([w.grant_a.id]),
        subjects_json=json.dumps([w.alice.id]),
        prior_sha256=None,
        inputs_json="[]",
        outputs_json="[]",
        created_at=format_time(w.clock()),
        log_index=-1,
    )
    if named == "grantee":  # a grantee row slipped in without its own leaf
        row.grantee_id = "gte_" + "f" * 20
        raw_insert(
            w.registry,
            "grantees",
            {"id": row.grantee_id, "name": "Ghost", "api_key_sha256": "00" * 32,
             "public_key": None, "created_at": row.created_at, "log_index": 99},
        )  # fmt: skip
    else:
        setattr(row, f"{named}_json", json.dumps([f"{named[:3]}_later"]))
    append_leaf(
        w.registry, "decision", row.id, Envelope.sign(statement_of(row), [w.operator]),
        table="decisions", row=row,
    )  # fmt: skip
    problems = w.registry.verify_log().problems
    assert any(row.id in p and "not earlier in the log" in p for p in problems), problems
