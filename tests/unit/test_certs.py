"""The development PKI, custom chains, and the chain checks run before any signing.

Bad chains are built here with ``cryptography`` directly (:func:`make_chain`), not with
the code under test, so a bug in the dev PKI cannot hide a bug in the checks.
"""

from __future__ import annotations

import datetime as dt
import json
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, SignatureAlgorithmOID

from consentry.errors import CertificateError, ConfigError, ProvenanceError
from consentry.provenance.certs import (
    C2PA_SIGNING_EKU,
    PkiPaths,
    certs_info,
    check_signing_chain,
    create_dev_pki,
    export_root,
    load_signing_identity,
    use_chain,
)

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
DAY = dt.timedelta(days=1)

# -- an independent chain factory ---------------------------------------------------------


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _usage(*, sign: bool, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _ca_cert(
    name: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    path_length: int,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - DAY)
        .not_valid_after(NOW + 30 * DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(_usage(sign=False, ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if key is not issuer_key:
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key())
        builder = builder.add_extension(aki, critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


@dataclass
class Chain:
    root: x509.Certificate
    intermediate: x509.Certificate
    signer: x509.Certificate
    signer_key: ec.EllipticCurvePrivateKey
    intermediate_key: ec.EllipticCurvePrivateKey

    @property
    def pem(self) -> bytes:
        return pem(self.signer, self.intermediate)

    @property
    def root_pem(self) -> bytes:
        return pem(self.root)

    @property
    def key_pem(self) -> bytes:
        return self.signer_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def make_chain(
    *,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    eku: list[x509.ObjectIdentifier] | None = None,
    digital_signature: bool = True,
    ca: bool = False,
    aki: bool = True,
    root_name: str = "Test Root",
) -> Chain:
    """A fresh root -> intermediate -> signer chain; keyword arguments spoil the signer."""
    root_key = ec.generate_private_key(ec.SECP256R1())
    inter_key = ec.generate_private_key(ec.SECP256R1())
    signer_key = ec.generate_private_key(ec.SECP256R1())
    root = _ca_cert(root_name, root_key, _name(root_name), root_key, 1)
    inter = _ca_cert("Test Intermediate", inter_key, root.subject, root_key, 0)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name("Test Signer"))
        .issuer_name(inter.subject)
        .public_key(signer_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or NOW - DAY)
        .not_valid_after(not_after or NOW + 10 * DAY)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(_usage(sign=digital_signature, ca=False), critical=True)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(signer_key.public_key()), critical=False
        )
    )
    usages = [ExtendedKeyUsageOID.EMAIL_PROTECTION, C2PA_SIGNING_EKU] if eku is None else eku
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    if aki:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(inter_key.public_key()),
            critical=False,
        )
    signer = builder.sign(inter_key, hashes.SHA256())
    return Chain(root, inter, signer, signer_key, inter_key)


def _ext(cert: x509.Certificate, kind: type[Any]) -> x509.Extension[Any]:
    return cert.extensions.get_extension_for_class(kind)


# -- the dev PKI ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dev_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("home")
    create_dev_pki(home)
    return home


def _load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_dev_pki_root_is_a_self_signed_ca_with_pathlen_1(dev_home: Path) -> None:
    root = _load(PkiPaths.of(dev_home).root_cert)
    constraints = _ext(root, x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 1
    usage = _ext(root, x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign and not usage.digital_signature
    assert _ext(root, x509.SubjectKeyIdentifier).value
    assert root.issuer == root.subject
    root.verify_directly_issued_by(root)


def test_dev_pki_intermediate_is_a_ca_with_pathlen_0_issued_by_root(dev_home: Path) -> None:
    paths = PkiPaths.of(dev_home)
    root, inter = _load(paths.root_cert), _load(paths.intermediate_cert)
    constraints = _ext(inter, x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    usage = _ext(inter, x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign
    root_ski = _ext(root, x509.SubjectKeyIdentifier).value.digest
    assert _ext(inter, x509.AuthorityKeyIdentifier).value.key_identifier == root_ski
    assert _ext(inter, x509.SubjectKeyIdentifier).value
    inter.verify_directly_issued_by(root)


def test_dev_pki_signer_has_the_c2pa_end_entity_profile(dev_home: Path) -> None:
    paths = PkiPaths.of(dev_home)
    inter, signer = _load(paths.intermediate_cert), _load(paths.signer_cert)
    constraints = _ext(signer, x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca is False
    usage = _ext(signer, x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature and not usage.value.key_cert_sign
    eku = _ext(signer, x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.EMAIL_PROTECTION in eku
    assert x509.ObjectIdentifier("1.3.6.1.4.1.62558.2.1") in eku
    inter_ski = _ext(inter, x509.SubjectKeyIdentifier).value.digest
    assert _ext(signer, x509.AuthorityKeyIdentifier).value.key_identifier == inter_ski
    assert _ext(signer, x509.SubjectKeyIdentifier).value
    signer.verify_directly_issued_by(inter)
    # validity nested: signer inside intermediate inside root
    root = _load(paths.root_cert)
    assert inter.not_valid_before_utc <= signer.not_valid_before_utc
    assert signer.not_valid_after_utc <= inter.not_valid_after_utc
    assert root.not_valid_before_utc <= inter.not_valid_before_utc
    assert inter.not_valid_after_utc <= root.not_valid_after_utc
    lifetime = signer.not_valid_after_utc - signer.not_valid_before_utc
    assert dt.timedelta(days=730) <= lifetime <= dt.timedelta(days=730, minutes=6)  # 5 min skew


def test_dev_pki_es256_uses_p256_and_sha256_everywhere(dev_home: Path) -> None:
    paths = PkiPaths.of(dev_home)
    for cert_path in (paths.root_cert, paths.intermediate_cert, paths.signer_cert):
        cert = _load(cert_path)
        public = cert.public_key()
        assert isinstance(public, ec.EllipticCurvePublicKey)
        assert public.curve.name == "secp256r1"
        assert cert.signature_algorithm_oid == SignatureAlgorithmOID.ECDSA_WITH_SHA256


def test_dev_pki_files_and_modes(dev_home: Path) -> None:
    paths = PkiPaths.of(dev_home)
    for key in (paths.root_key, paths.intermediate_key, paths.signer_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
        assert b"PRIVATE KEY" in key.read_bytes()
    assert stat.S_IMODE(paths.dir.stat().st_mode) & 0o077 == 0
    chain = x509.load_pem_x509_certificates(paths.chain.read_bytes())
    assert [c.subject for c in chain] == [
        _load(paths.signer_cert).subject,
        _load(paths.intermediate_cert).subject,
    ]
    assert json.loads(paths.active.read_text())["kind"] == "dev"
    check_signing_chain(paths.chain.read_bytes(), trust_root_pem=paths.root_cert.read_bytes())


def test_dev_pki_refuses_to_overwrite(tmp_path: Path) -> None:
    paths = create_dev_pki(tmp_path)
    before = {p: p.read_bytes() for p in paths.dev_files()}
    with pytest.raises(ProvenanceError, match="already exists"):
        create_dev_pki(tmp_path)
    assert {p: p.read_bytes() for p in paths.dev_files()} == before


def test_dev_pki_refuses_when_any_file_is_present(tmp_path: Path) -> None:
    paths = PkiPaths.of(tmp_path)
    paths.dir.mkdir()
    paths.signer_key.write_bytes(b"someone else's key")
    with pytest.raises(ProvenanceError):
        create_dev_pki(tmp_path)
    assert paths.signer_key.read_bytes() == b"someone else's key"
    assert not paths.root_key.exists()


def test_ed25519_dev_pki(tmp_path: Path) -> None:
    paths = create_dev_pki(tmp_path, alg="ed25519", org="Ed Org", days=30)
    for cert_path in (paths.root_cert, paths.intermediate_cert, paths.signer_cert):
        cert = _load(cert_path)
        assert isinstance(cert.public_key(), ed25519.Ed25519PublicKey)
        assert cert.signature_algorithm_oid == SignatureAlgorithmOID.ED25519
        assert cert.signature_hash_algorithm is None
    check_signing_chain(paths.chain.read_bytes(), trust_root_pem=paths.root_cert.read_bytes())
    identity = load_signing_identity(tmp_path)
    assert identity.alg == "ed25519"
    assert identity.certificate.subject.rfc4514_string() == "O=Ed Org,CN=Ed Org C2PA signer"


def test_load_signing_identity_dev(dev_home: Path) -> None:
    identity = load_signing_identity(dev_home)
    paths = PkiPaths.of(dev_home)
    assert identity.alg == "es256"
    assert identity.kind == "dev"
    assert identity.chain_pem == paths.chain.read_bytes()
    assert identity.key_pem == paths.signer_key.read_bytes()
    assert identity.certificate == _load(paths.signer_cert)
    assert b"PRIVATE" not in repr(identity).encode()


def test_no_identity_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no signing identity"):
        load_signing_identity(tmp_path)


def test_certs_info_and_export_root(dev_home: Path, tmp_path: Path) -> None:
    paths = PkiPaths.of(dev_home)
    info = certs_info(dev_home)
    assert info["kind"] == "dev" and info["alg"] == "es256" and info["key_held"] is True
    signer = _load(paths.signer_cert)
    assert [c["role"] for c in info["chain"]] == ["signer", "intermediate 1"]
    assert info["chain"][0]["sha256"] == signer.fingerprint(hashes.SHA256()).hex()
    assert info["chain"][0]["serial"] == format(signer.serial_number, "x")
    assert info["chain"][0]["subject"] == signer.subject.rfc4514_string()
    assert info["chain"][0]["not_after"] == signer.not_valid_after_utc.isoformat()
    assert info["root"]["subject"] == info["chain"][1]["issuer"]
    json.dumps(info)
    out = export_root(dev_home, tmp_path / "root.pem")
    assert out.read_bytes() == paths.root_cert.read_bytes()


# -- custom chains -------------------------------------------------------------------------


def test_use_chain_installs_a_custom_identity(tmp_path: Path) -> None:
    chain = make_chain()
    (tmp_path / "chain.pem").write_bytes(chain.pem)
    (tmp_path / "key.pem").write_bytes(chain.key_pem)
    (tmp_path / "root.pem").write_bytes(chain.root_pem)
    home = tmp_path / "home"
    paths = use_chain(
        home, tmp_path / "chain.pem", tmp_path / "key.pem", root_file=tmp_path / "root.pem"
    )
    assert stat.S_IMODE(paths.custom_key.stat().st_mode) == 0o600
    assert json.loads(paths.active.read_text())["kind"] == "custom"
    identity = load_signing_identity(home)
    assert identity.kind == "custom" and identity.alg == "es256"
    assert identity.chain_pem == chain.pem and identity.key_pem == chain.key_pem
    assert export_root(home, tmp_path / "out.pem").read_bytes() == chain.root_pem
    assert certs_info(home)["root"]["subject"] == chain.root.subject.rfc4514_string()


def test_use_chain_without_a_key_for_kms(tmp_path: Path) -> None:
    chain = make_chain()
    (tmp_path / "chain.pem").write_bytes(chain.pem)
    use_chain(tmp_path / "home", tmp_path / "chain.pem", None)
    identity = load_signing_identity(tmp_path / "home")
    assert identity.key_pem is None
    with pytest.raises(ConfigError, match="no root"):
        export_root(tmp_path / "home", tmp_path / "root.pem")


def test_use_chain_rejects_a_bad_chain_and_installs_nothing(tmp_path: Path) -> None:
    chain = make_chain(not_after=NOW - DAY)
    (tmp_path / "chain.pem").write_bytes(chain.pem)
    (tmp_path / "key.pem").write_bytes(chain.key_pem)
    with pytest.raises(CertificateError, match="expired"):
        use_chain(tmp_path / "home", tmp_path / "chain.pem", tmp_path / "key.pem")
    assert not (tmp_path / "home" / "pki").exists()


def test_use_chain_rejects_a_key_of_another_certificate(tmp_path: Path) -> None:
    chain, other = make_chain(), make_chain()
    (tmp_path / "chain.pem").write_bytes(chain.pem)
    (tmp_path / "key.pem").write_bytes(other.key_pem)
    with pytest.raises(CertificateError, match="does not belong"):
        use_chain(tmp_path / "home", tmp_path / "chain.pem", tmp_path / "key.pem")


def test_use_chain_checks_the_given_root(tmp_path: Path) -> None:
    chain, other = make_chain(), make_chain(root_name="Other Root")
    (tmp_path / "chain.pem").write_bytes(chain.pem)
    (tmp_path / "root.pem").write_bytes(other.root_pem)
    with pytest.raises(CertificateError, match="trust root"):
        use_chain(tmp_path / "home", tmp_path / "chain.pem", None, root_file=tmp_path / "root.pem")


# -- check_signing_chain -------------------------------------------------------------------


def test_good_chain_passes() -> None:
    chain = make_chain()
    check_signing_chain(chain.pem)
    check_signing_chain(chain.pem, trust_root_pem=chain.root_pem)
    check_signing_chain(chain.pem + chain.root_pem, trust_root_pem=chain.root_pem)


def _expired() -> tuple[bytes, bytes | None]:
    return make_chain(not_before=NOW - 10 * DAY, not_after=NOW - DAY).pem, None


def _not_yet_valid() -> tuple[bytes, bytes | None]:
    return make_chain(not_before=NOW + DAY, not_after=NOW + 10 * DAY).pem, None


def _intermediate_first() -> tuple[bytes, bytes | None]:
    chain = make_chain()
    return pem(chain.intermediate, chain.signer), None


def _foreign_intermediate() -> tuple[bytes, bytes | None]:
    return pem(make_chain().signer, make_chain().intermediate), None


def _forged_issuer() -> tuple[bytes, bytes | None]:
    # an "intermediate" with the right name but another key: names match, signature fails
    chain = make_chain()
    impostor_key = ec.generate_private_key(ec.SECP256R1())
    root_key = ec.generate_private_key(ec.SECP256R1())
    impostor = _ca_cert("Test Intermediate", impostor_key, chain.root.subject, root_key, 0)
    return pem(chain.signer, impostor), None


def _other_root() -> tuple[bytes, bytes | None]:
    return make_chain(root_name="Evil Root").pem, make_chain().root_pem


def _leaf_only_ca() -> tuple[bytes, bytes | None]:
    return pem(make_chain().intermediate), None


BAD_CHAINS: list[tuple[str, Callable[[], tuple[bytes, bytes | None]], str]] = [
    ("empty", lambda: (b"", None), "empty"),
    ("whitespace", lambda: (b"  \n", None), "empty"),
    (
        "unparsable",
        lambda: (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", None),
        "not parsable",
    ),
    ("expired_signer", _expired, "expired on"),
    ("not_yet_valid", _not_yet_valid, "not valid before"),
    ("missing_eku", lambda: (make_chain(eku=[]).pem, None), "emailProtection"),
    (
        "eku_without_email_protection",
        lambda: (make_chain(eku=[C2PA_SIGNING_EKU]).pem, None),
        "emailProtection",
    ),
    (
        "no_digital_signature",
        lambda: (make_chain(digital_signature=False).pem, None),
        "digitalSignature",
    ),
    ("ca_flag_on_end_entity", lambda: (make_chain(ca=True).pem, None), "CA certificate"),
    ("missing_aki", lambda: (make_chain(aki=False).pem, None), "AuthorityKeyIdentifier"),
    ("intermediate_first", _intermediate_first, "out of order"),
    ("foreign_intermediate", _foreign_intermediate, "out of order"),
    ("forged_issuer_signature", _forged_issuer, "signature does not verify"),
    ("signer_from_another_root", _other_root, "does not end at the trust root"),
    ("only_a_ca_certificate", _leaf_only_ca, "CA certificate"),
]


@pytest.mark.parametrize(
    ("make", "message"),
    [pytest.param(make, message, id=name) for name, make, message in BAD_CHAINS],
)
def test_bad_chain_is_refused(make: Callable[[], tuple[bytes, bytes | None]], message: str) -> None:
    chain_pem, root_pem = make()
    with pytest.raises(CertificateError, match=message) as info:
        check_signing_chain(chain_pem, trust_root_pem=root_pem)
    assert "\n" not in str(info.value)
    assert info.value.exit_code == 2


def test_validity_is_judged_at_the_given_time() -> None:
    chain = make_chain(not_before=NOW - DAY, not_after=NOW + DAY)
    check_signing_chain(chain.pem, at=NOW)
    with pytest.raises(CertificateError, match="expired"):
        check_signing_chain(chain.pem, at=NOW + 2 * DAY)
    with pytest.raises(CertificateError, match="not valid before"):
        check_signing_chain(chain.pem, at=(NOW - 2 * DAY).replace(tzinfo=None))


def test_unparsable_trust_root_is_refused() -> None:
    with pytest.raises(CertificateError, match="trust root is not a PEM"):
        check_signing_chain(make_chain().pem, trust_root_pem=b"not a certificate")
