"""Signing C2PA claims through an interface, so the key may live in a file, a KMS or an HSM.

c2pa only ever receives a callback (:func:`c2pa_signer` always uses
``c2pa.Signer.from_callback``): the private key never crosses into the C2PA library.

Signature formats (what :meth:`ManifestSigner.sign` returns, per algorithm):

- ``es256`` / ``es384`` / ``es512``: the raw ``r || s`` concatenation (IEEE P1363), each
  integer big-endian and left-padded to the curve size (64, 96, 132 bytes). This is what
  COSE (RFC 9053) puts in the signature and what ends up in the manifest. c2pa-python
  0.38.1 (c2pa-rs 0.91.3) also accepts a DER ``ECDSA-Sig-Value`` and converts it, but we
  do not rely on that: :func:`c2pa_signer` normalises DER (as AWS/GCP KMS return) to
  ``r || s`` itself.
- ``ps256`` / ``ps384`` / ``ps512``: RSASSA-PSS, MGF1 with the same hash, salt = hash size.
- ``ed25519``: the 64-byte Ed25519 signature of the data.

The data to sign is the COSE ``Sig_structure`` c2pa builds; signers sign it as given
(ECDSA and PSS hash it with the algorithm's hash; Ed25519 signs it directly).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import c2pa  # type: ignore[import-untyped, unused-ignore]
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from consentry.errors import CertificateError, ManifestError
from consentry.provenance.certs import SigningIdentity
from consentry.provenance.chain import alg_for_public_key, check_signing_chain

__all__ = [
    "ALGORITHMS",
    "CallbackSigner",
    "LocalKeySigner",
    "ManifestSigner",
    "c2pa_signer",
    "signer_from_identity",
]

#: C2PA algorithm names and the c2pa-python enum for each.
ALGORITHMS: dict[str, c2pa.C2paSigningAlg] = {
    "es256": c2pa.C2paSigningAlg.ES256,
    "es384": c2pa.C2paSigningAlg.ES384,
    "es512": c2pa.C2paSigningAlg.ES512,
    "ps256": c2pa.C2paSigningAlg.PS256,
    "ps384": c2pa.C2paSigningAlg.PS384,
    "ps512": c2pa.C2paSigningAlg.PS512,
    "ed25519": c2pa.C2paSigningAlg.ED25519,
}
_EC_SIZES = {"es256": 32, "es384": 48, "es512": 66}
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "es256": hashes.SHA256,
    "es384": hashes.SHA384,
    "es512": hashes.SHA512,
    "ps256": hashes.SHA256,
    "ps384": hashes.SHA384,
    "ps512": hashes.SHA512,
}


@runtime_checkable
class ManifestSigner(Protocol):
    """Anything that signs claim bytes for one certificate chain.

    ``alg`` is the C2PA algorithm name; ``chain_pem`` the signer certificate first, then
    intermediates; ``sign`` returns the signature in the format given in the module
    docstring (for ECDSA: raw ``r || s``).
    """

    alg: str
    chain_pem: bytes

    def sign(self, data: bytes) -> bytes: ...


def _check_alg(alg: str) -> str:
    name = alg.lower()
    if name not in ALGORITHMS:
        raise CertificateError(f"unsupported C2PA signing algorithm {alg!r}")
    return name


def _check_alg_fits(alg: str, implied: str, what: str) -> None:
    # RSA keys imply ps256 but may sign with any PSS variant; everything else is exact.
    if alg != implied and not (implied == "ps256" and alg.startswith("ps")):
        raise CertificateError(f"a {implied} {what} cannot sign as {alg}")


def _spki(public: Any) -> bytes:
    return bytes(
        public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def _leaf(chain_pem: bytes) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificates(chain_pem)[0]
    except (ValueError, IndexError) as exc:
        raise CertificateError(f"the certificate chain is not parsable PEM: {exc}") from exc


def _raw_ecdsa(der: bytes, alg: str) -> bytes:
    size = _EC_SIZES[alg]
    r, s = decode_dss_signature(der)
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")


@dataclass(eq=False)
class LocalKeySigner:
    """Signs with a PEM private key held in this process (the dev PKI, a key file).

    The key must belong to the chain's first certificate; ``alg`` defaults to the one
    that key implies (ES256 for P-256, Ed25519, PS256 for RSA).
    """

    key_pem: bytes = field(repr=False)
    chain_pem: bytes
    alg: str = ""
    _key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey = field(
        init=False, repr=False
    )

    def __post_init__(self) -> None:
        try:
            key = serialization.load_pem_private_key(self.key_pem, password=None)
        except (TypeError, ValueError) as exc:
            raise CertificateError(f"cannot load the signing key: {exc}") from exc
        if not isinstance(
            key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
        ):
            raise CertificateError(f"unsupported signing key type {type(key).__name__}")
        implied = alg_for_public_key(key.public_key())
        self.alg = _check_alg(self.alg or implied)
        _check_alg_fits(self.alg, implied, "key")
        if _spki(key.public_key()) != _spki(_leaf(self.chain_pem).public_key()):
            raise CertificateError(
                "the signing key does not belong to the chain's first certificate"
            )
        self._key = key

    def sign(self, data: bytes) -> bytes:
        key = self._key
        if isinstance(key, ed25519.Ed25519PrivateKey):
            return key.sign(data)
        digest = _HASHES[self.alg]()
        if isinstance(key, ec.EllipticCurvePrivateKey):
            return _raw_ecdsa(key.sign(data, ec.ECDSA(digest)), self.alg)
        pss = padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size)
        return key.sign(data, pss, digest)


@dataclass(eq=False)
class CallbackSigner:
    """Signs through ``fn`` (a KMS/HSM client, a remote service): the key lives elsewhere.

    ``fn(data) -> signature`` must return the format described in the module docstring;
    for ECDSA a DER signature is also accepted and converted.
    """

    fn: Callable[[bytes], bytes] = field(repr=False)
    chain_pem: bytes
    alg: str

    def __post_init__(self) -> None:
        self.alg = _check_alg(self.alg)

    def sign(self, data: bytes) -> bytes:
        return self.fn(data)


def signer_from_identity(identity: SigningIdentity) -> LocalKeySigner:
    """A :class:`LocalKeySigner` for a loaded identity; CertificateError if no local key."""
    if identity.key_pem is None:
        raise CertificateError(
            "the active signing identity has no local key: sign with a CallbackSigner"
        )
    return LocalKeySigner(identity.key_pem, identity.chain_pem, identity.alg)


class _Bridge:
    """The callback handed to c2pa: normalises the signature and keeps any exception.

    c2pa-python swallows exceptions raised in a callback (it logs them and reports a
    generic signature error), so the original is kept here for the caller to re-raise.
    """

    def __init__(self, signer: ManifestSigner) -> None:
        self.signer = signer
        self.alg = _check_alg(signer.alg)
        self.error: BaseException | None = None

    def __call__(self, data: bytes) -> bytes:
        try:
            signature = bytes(self.signer.sign(bytes(data)))
            size = _EC_SIZES.get(self.alg)
            if size is not None and len(signature) != 2 * size:
                signature = _raw_ecdsa(signature, self.alg)
            return signature
        except BaseException as exc:  # reported to the caller after c2pa returns
            self.error = exc
            raise


def _bridge(signer: ManifestSigner) -> tuple[c2pa.Signer, _Bridge]:
    check_signing_chain(signer.chain_pem)
    bridge = _Bridge(signer)
    _check_alg_fits(
        bridge.alg, alg_for_public_key(_leaf(signer.chain_pem).public_key()), "certificate"
    )
    try:
        native = c2pa.Signer.from_callback(
            bridge, ALGORITHMS[bridge.alg], signer.chain_pem.decode("ascii"), None
        )
    except (c2pa.C2paError, UnicodeDecodeError) as exc:
        raise ManifestError(f"c2pa refused the signer: {exc}") from exc
    return native, bridge


def c2pa_signer(signer: ManifestSigner) -> c2pa.Signer:
    """A ``c2pa.Signer`` that calls ``signer.sign`` (no timestamp authority: offline).

    :func:`~consentry.provenance.certs.check_signing_chain` runs first, so an expired or
    misissued chain raises :class:`CertificateError` before c2pa is involved.
    """
    return _bridge(signer)[0]
