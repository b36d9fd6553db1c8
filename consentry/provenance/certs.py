"""Signing certificates for C2PA manifests: a development PKI, custom chains, chain checks.

A C2PA claim is signed with the key of an end-entity ("signer") certificate; readers
trust it only when its chain ends at a root they were given. C2PA readers are strict
about that certificate, so :func:`check_signing_chain` applies the same rules *before*
anything is signed and fails with one clear line instead of an opaque signing error.

Layout (all under ``HOME/pki/``, the folder is created ``0700``)::

    root.pem  root.key                  dev root CA (self-signed, CA, pathlen 1)
    intermediate.pem intermediate.key   dev intermediate CA (CA, pathlen 0)
    signer.pem signer.key               dev signing certificate (end entity)
    chain.pem                           signer then intermediate: what manifests carry
    custom/chain.pem custom/signer.key  an organisation's own chain (see use_chain)
    custom/root.pem                     its root, when one was given
    active.json                         which identity signs: {"kind": "dev"|"custom", ...}

Every private key is written ``0600`` with ``O_EXCL``. The dev root and intermediate
keys exist only because this is a development PKI that issues its own signer; a
production deployment keeps CA keys offline and installs its chain with
:func:`use_chain`, where only the signer key (or none, for a KMS/HSM) is stored.

Invariants checked on every chain (:func:`check_signing_chain`, in
:mod:`consentry.provenance.chain`, re-exported here):

- the first certificate is the signer: not a CA, KeyUsage digitalSignature,
  ExtendedKeyUsage emailProtection, an AuthorityKeyIdentifier, not self-signed;
- every certificate is within its validity period at the given time;
- certificate *i* is issued by certificate *i + 1* (names match, signature verifies),
  and every issuer is a CA whose path length allows what sits below it;
- with a trust root given, the last certificate is that root or is issued by it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from consentry.errors import CertificateError, ConfigError, ProvenanceError
from consentry.fsutil import atomic_write
from consentry.provenance.chain import (
    alg_for_public_key,
    check_signing_chain,
    common_name,
    load_chain,
)

__all__ = [
    "C2PA_SIGNING_EKU",
    "PkiPaths",
    "SigningIdentity",
    "alg_for_public_key",
    "certs_info",
    "check_signing_chain",
    "create_dev_pki",
    "export_root",
    "load_signing_identity",
    "root_pem",
    "use_chain",
]

#: The C2PA claim-signing extended key usage (id-kp-c2pa-signing in the C2PA spec).
C2PA_SIGNING_EKU = x509.ObjectIdentifier("1.3.6.1.4.1.62558.2.1")

DevAlg = Literal["es256", "ed25519"]
_PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
_CLOCK_SKEW = dt.timedelta(minutes=5)


@dataclass(frozen=True)
class PkiPaths:
    """The files of one home's PKI (``HOME/pki/...``); nothing is created here."""

    dir: Path

    @classmethod
    def of(cls, home_root: Path | str) -> PkiPaths:
        return cls(Path(home_root) / "pki")

    @property
    def root_cert(self) -> Path:
        return self.dir / "root.pem"

    @property
    def root_key(self) -> Path:
        return self.dir / "root.key"

    @property
    def intermediate_cert(self) -> Path:
        return self.dir / "intermediate.pem"

    @property
    def intermediate_key(self) -> Path:
        return self.dir / "intermediate.key"

    @property
    def signer_cert(self) -> Path:
        return self.dir / "signer.pem"

    @property
    def signer_key(self) -> Path:
        return self.dir / "signer.key"

    @property
    def chain(self) -> Path:
        return self.dir / "chain.pem"

    @property
    def custom_dir(self) -> Path:
        return self.dir / "custom"

    @property
    def custom_chain(self) -> Path:
        return self.custom_dir / "chain.pem"

    @property
    def custom_key(self) -> Path:
        return self.custom_dir / "signer.key"

    @property
    def custom_root(self) -> Path:
        return self.custom_dir / "root.pem"

    @property
    def active(self) -> Path:
        return self.dir / "active.json"

    def dev_files(self) -> tuple[Path, ...]:
        return (
            self.root_cert,
            self.root_key,
            self.intermediate_cert,
            self.intermediate_key,
            self.signer_cert,
            self.signer_key,
            self.chain,
        )


@dataclass(frozen=True)
class SigningIdentity:
    """What signs manifests: the chain (signer first), its key if held locally, the alg.

    ``alg`` is the C2PA algorithm name (``"es256"``, ``"ed25519"``, ``"ps256"``, ...).
    ``key_pem`` is ``None`` when the key lives elsewhere (KMS/HSM): sign through a
    :class:`~consentry.provenance.signer.CallbackSigner` then.
    """

    alg: str
    chain_pem: bytes
    key_pem: bytes | None = field(repr=False)
    certificate: x509.Certificate
    kind: str = "dev"


# -- the development PKI -----------------------------------------------------------------


def create_dev_pki(
    home_root: Path | str,
    alg: DevAlg = "es256",
    org: str = "Consentry dev",
    days: int = 365 * 2,
) -> PkiPaths:
    """Create a root -> intermediate -> signer PKI under ``HOME/pki/`` and make it active.

    For development and self-hosted trials only: the root and intermediate private keys
    are written next to the signer's so the PKI can be inspected and re-issued; a
    production deployment keeps CA keys offline and uses :func:`use_chain` instead.
    Every level uses ``alg`` (ES256 = ECDSA P-256 with SHA-256, or Ed25519). The signer
    is valid ``days`` days, inside the intermediate's validity, itself inside the root's.
    Raises :class:`ProvenanceError` if a PKI already exists there (nothing is overwritten).
    """
    if alg not in ("es256", "ed25519"):
        raise CertificateError(f"unsupported dev PKI algorithm {alg!r}: use es256 or ed25519")
    if days < 1:
        raise CertificateError("days must be at least 1")
    paths = PkiPaths.of(home_root)
    existing = [p for p in (*paths.dev_files(), paths.active) if p.exists()]
    if existing:
        raise ProvenanceError(
            f"a PKI already exists in {paths.dir} ({existing[0].name}); "
            "refusing to overwrite it: remove the folder or use another home"
        )
    paths.dir.mkdir(parents=True, exist_ok=True, mode=0o700)

    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    start = now - _CLOCK_SKEW
    end = now + dt.timedelta(days=days)
    one_day = dt.timedelta(days=1)

    root_key, inter_key, signer_key = (_new_key(alg) for _ in range(3))
    root_name = _name(f"{org} Root CA", org)
    inter_name = _name(f"{org} Intermediate CA", org)
    signer_name = _name(f"{org} C2PA signer", org)

    root = _issue_ca(root_name, root_key, root_name, root_key, 1, start, end + 2 * one_day)
    inter = _issue_ca(inter_name, inter_key, root_name, root_key, 0, start, end + one_day)
    signer = _issue_signer(signer_name, signer_key, inter_name, inter_key, start, end)

    _write_new(paths.root_key, _key_pem(root_key), 0o600)
    _write_new(paths.intermediate_key, _key_pem(inter_key), 0o600)
    _write_new(paths.signer_key, _key_pem(signer_key), 0o600)
    _write_new(paths.root_cert, _cert_pem(root), 0o644)
    _write_new(paths.intermediate_cert, _cert_pem(inter), 0o644)
    _write_new(paths.signer_cert, _cert_pem(signer), 0o644)
    _write_new(paths.chain, _cert_pem(signer) + _cert_pem(inter), 0o644)
    _write_active(paths, {"kind": "dev", "chain": "chain.pem", "key": "signer.key"})
    return paths


def _new_key(alg: DevAlg) -> _PrivateKey:
    if alg == "es256":
        return ec.generate_private_key(ec.SECP256R1())
    return ed25519.Ed25519PrivateKey.generate()


def _hash_for(key: _PrivateKey) -> hashes.SHA256 | None:
    # Ed25519 signs the message itself; ECDSA P-256 pairs with SHA-256.
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


def _name(common_name: str, org: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
        ]
    )


def _base(
    subject: x509.Name,
    subject_key: _PrivateKey,
    issuer: x509.Name,
    issuer_key: _PrivateKey,
    not_before: dt.datetime,
    not_after: dt.datetime,
) -> x509.CertificateBuilder:
    public = subject_key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
    )
    if subject_key is not issuer_key:
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key())
        builder = builder.add_extension(aki, critical=False)
    return builder


def _issue_ca(
    subject: x509.Name,
    subject_key: _PrivateKey,
    issuer: x509.Name,
    issuer_key: _PrivateKey,
    path_length: int,
    not_before: dt.datetime,
    not_after: dt.datetime,
) -> x509.Certificate:
    usage = x509.KeyUsage(
        digital_signature=False,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )
    return (
        _base(subject, subject_key, issuer, issuer_key, not_before, not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(usage, critical=True)
        .sign(issuer_key, _hash_for(issuer_key))
    )


def _issue_signer(
    subject: x509.Name,
    subject_key: _PrivateKey,
    issuer: x509.Name,
    issuer_key: _PrivateKey,
    not_before: dt.datetime,
    not_after: dt.datetime,
) -> x509.Certificate:
    usage = x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )
    eku = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION, C2PA_SIGNING_EKU])
    return (
        _base(subject, subject_key, issuer, issuer_key, not_before, not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(eku, critical=False)
        .sign(issuer_key, _hash_for(issuer_key))
    )


def _key_pem(key: _PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` with ``mode``; fail if it exists (no races, no overwrite)."""
    atomic_write(path, data, mode, exclusive=True)


def _replace(path: Path, data: bytes, mode: int) -> None:
    """Write ``path`` atomically and durably (``consentry.fsutil.atomic_write``)."""
    atomic_write(path, data, mode)


def _write_active(paths: PkiPaths, record: dict[str, Any]) -> None:
    text = json.dumps(record, indent=2, sort_keys=True) + "\n"
    _replace(paths.active, text.encode(), 0o644)


# -- custom chains -------------------------------------------------------------------------


def use_chain(
    home_root: Path | str,
    chain_file: Path | str,
    key_file: Path | str | None,
    *,
    root_file: Path | str | None = None,
) -> PkiPaths:
    """Install an organisation's own chain (signer first) and key as the active identity.

    The chain must pass :func:`check_signing_chain` now (against ``root_file`` when
    given), and the key must belong to the signer certificate. Files are copied into
    ``HOME/pki/custom/`` (the key ``0600``) and ``HOME/pki/active.json`` is updated.
    Pass ``key_file=None`` when the key stays in a KMS/HSM: signing then needs a
    :class:`~consentry.provenance.signer.CallbackSigner`.
    """
    chain_pem = _read(Path(chain_file), "chain")
    root_pem = _read(Path(root_file), "root") if root_file is not None else None
    check_signing_chain(chain_pem, trust_root_pem=root_pem)
    leaf = load_chain(chain_pem)[0]
    key_pem: bytes | None = None
    if key_file is not None:
        key_pem = _read(Path(key_file), "key")
        _check_key_matches(key_pem, leaf)

    paths = PkiPaths.of(home_root)
    paths.custom_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    _replace(paths.custom_chain, chain_pem, 0o644)
    if key_pem is not None:
        _replace(paths.custom_key, key_pem, 0o600)
    else:
        with contextlib.suppress(FileNotFoundError):
            paths.custom_key.unlink()
    if root_pem is not None:
        _replace(paths.custom_root, root_pem, 0o644)
    else:
        with contextlib.suppress(FileNotFoundError):
            paths.custom_root.unlink()
    record = {
        "kind": "custom",
        "chain": "custom/chain.pem",
        "key": "custom/signer.key" if key_pem is not None else None,
    }
    _write_active(paths, record)
    return paths


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the {what} file {path}: {exc.strerror or exc}") from exc


def _check_key_matches(key_pem: bytes, cert: x509.Certificate) -> None:
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError as exc:
        raise CertificateError(
            "the signing key is encrypted: decrypt it, or keep it in a KMS and sign by callback"
        ) from exc
    except ValueError as exc:
        raise CertificateError(f"the signing key is not a PEM private key: {exc}") from exc
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if key.public_key().public_bytes(der, public) != cert.public_key().public_bytes(der, public):
        raise CertificateError(
            f"the signing key does not belong to the signer certificate ({common_name(cert)})"
        )


# -- loading -----------------------------------------------------------------------------


def load_signing_identity(home_root: Path | str) -> SigningIdentity:
    """The active identity of ``HOME/pki`` (see ``active.json``); ConfigError if none."""
    paths = PkiPaths.of(home_root)
    record = _active_record(paths)
    chain_pem = _read(paths.dir / str(record["chain"]), "chain")
    key_rel = record.get("key")
    key_pem = _read(paths.dir / str(key_rel), "key") if key_rel else None
    certs = load_chain(chain_pem)
    return SigningIdentity(
        alg=alg_for_public_key(certs[0].public_key()),
        chain_pem=chain_pem,
        key_pem=key_pem,
        certificate=certs[0],
        kind=str(record.get("kind", "dev")),
    )


def _active_record(paths: PkiPaths) -> dict[str, Any]:
    if not paths.active.is_file():
        if paths.chain.is_file():
            return {"kind": "dev", "chain": "chain.pem", "key": "signer.key"}
        raise ConfigError(
            f"no signing identity in {paths.dir}: create a dev PKI ('consentry certs init') "
            "or install your chain ('consentry certs use')"
        )
    try:
        record = json.loads(paths.active.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read {paths.active}: {exc}") from exc
    if not isinstance(record, dict) or not isinstance(record.get("chain"), str):
        raise ConfigError(f"{paths.active} does not name a chain file")
    for key in ("chain", "key"):
        rel = record.get(key)
        if rel is not None and (Path(rel).is_absolute() or ".." in Path(rel).parts):
            raise ConfigError(f"{paths.active}: {key} must be a path inside {paths.dir}")
    return record


# -- inspection ----------------------------------------------------------------------------


def _describe(cert: x509.Certificate, role: str) -> dict[str, Any]:
    return {
        "role": role,
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "serial": format(cert.serial_number, "x"),
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "sha256": cert.fingerprint(hashes.SHA256()).hex(),
    }


def _root_file(paths: PkiPaths, kind: str) -> Path | None:
    candidate = paths.root_cert if kind == "dev" else paths.custom_root
    return candidate if candidate.is_file() else None


def certs_info(home_root: Path | str) -> dict[str, Any]:
    """A JSON-ready description of the active identity, for ``consentry certs show``.

    Keys: ``kind`` (dev/custom), ``alg``, ``pki_dir``, ``key_held`` (a local key file
    exists), ``chain`` (one dict per certificate, signer first: role, subject, issuer,
    serial in hex, not_before/not_after ISO 8601 UTC, SHA-256 fingerprint in hex) and
    ``root`` (the same for the root, or ``None`` if the home has none).
    """
    paths = PkiPaths.of(home_root)
    identity = load_signing_identity(home_root)
    certs = load_chain(identity.chain_pem)
    chain = [
        _describe(cert, "signer" if i == 0 else f"intermediate {i}") for i, cert in enumerate(certs)
    ]
    root_path = _root_file(paths, identity.kind)
    root = None
    if root_path is not None:
        root = _describe(x509.load_pem_x509_certificate(root_path.read_bytes()), "root")
    return {
        "kind": identity.kind,
        "alg": identity.alg,
        "pki_dir": str(paths.dir),
        "key_held": identity.key_pem is not None,
        "chain": chain,
        "root": root,
    }


def root_pem(home_root: Path | str) -> bytes:
    """The active identity's root certificate (PEM): the trust anchor for this home's outputs.

    ConfigError if the home has no root (a custom chain installed without ``root_file``).
    """
    paths = PkiPaths.of(home_root)
    kind = str(_active_record(paths).get("kind", "dev"))
    root_path = _root_file(paths, kind)
    if root_path is None:
        raise ConfigError(f"no root certificate in {paths.dir} for the {kind} identity")
    return _read(root_path, "root")


def export_root(home_root: Path | str, out: Path | str) -> Path:
    """Write the active identity's root certificate (PEM) to ``out``: what readers trust.

    Readers pass it as ``trust_anchors_pem`` to
    :func:`consentry.provenance.c2pa_io.read_asset`. ConfigError if the home has no root
    (a custom chain installed without ``root_file``).
    """
    paths = PkiPaths.of(home_root)
    kind = str(_active_record(paths).get("kind", "dev"))
    root_path = _root_file(paths, kind)
    if root_path is None:
        raise ConfigError(f"no root certificate in {paths.dir} for the {kind} identity")
    target = Path(out)
    target.write_bytes(root_path.read_bytes())
    return target
