"""The rules a C2PA signing chain must pass, checked before anything is signed.

C2PA readers are strict about the signer certificate and its chain;
:func:`check_signing_chain` applies the same rules first and fails with one clear
:class:`~consentry.errors.CertificateError` line instead of an opaque signing error.
:mod:`consentry.provenance.certs` (which makes and installs chains, and re-exports
these names) and :mod:`consentry.provenance.signer` call it.

Invariants checked on every chain (:func:`check_signing_chain`), in this order:

- certificate *i* is issued by certificate *i + 1* (names match, signature verifies),
  and every issuer is a CA whose path length allows what sits below it (so an
  intermediate placed first is "out of order", not "a CA signer");
- the first certificate is the signer: not a CA, KeyUsage digitalSignature,
  ExtendedKeyUsage emailProtection, an AuthorityKeyIdentifier, not self-signed, and a
  key C2PA can sign with (:func:`alg_for_public_key`: Ed25519, P-256/384/521, RSA of at
  least 2048 bits);
- every certificate is within its validity period at the given time;
- with a trust root given, the root is valid then and the last certificate is that
  root or is issued by it.

Pure: nothing here reads files or the clock, except ``check_signing_chain``'s default
``at`` (now).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from consentry.errors import CertificateError

__all__ = ["alg_for_public_key", "check_signing_chain", "common_name", "load_chain"]

_EC_ALGS = {"secp256r1": "es256", "secp384r1": "es384", "secp521r1": "es512"}
_MIN_RSA_BITS = 2048


def alg_for_public_key(public: Any) -> str:
    """The C2PA signing algorithm name for a certificate's public key."""
    if isinstance(public, ed25519.Ed25519PublicKey):
        return "ed25519"
    if isinstance(public, ec.EllipticCurvePublicKey):
        alg = _EC_ALGS.get(public.curve.name)
        if alg is None:
            raise CertificateError(f"unsupported EC curve {public.curve.name} for C2PA")
        return alg
    if isinstance(public, rsa.RSAPublicKey):
        if public.key_size < _MIN_RSA_BITS:
            raise CertificateError(f"RSA key of {public.key_size} bits is too small for C2PA")
        return "ps256"
    raise CertificateError(f"unsupported public key type {type(public).__name__} for C2PA")


def load_chain(chain_pem: bytes) -> list[x509.Certificate]:
    """The certificates of a PEM chain, in order; CertificateError if none parse."""
    if not chain_pem or not chain_pem.strip():
        raise CertificateError("the certificate chain is empty")
    try:
        certs = x509.load_pem_x509_certificates(chain_pem)
    except ValueError as exc:
        raise CertificateError(f"the certificate chain is not parsable PEM: {exc}") from exc
    if not certs:
        raise CertificateError("the certificate chain is empty")
    return certs


def common_name(cert: x509.Certificate) -> str:
    """The subject's common name (the whole subject name if it has none), for messages."""
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else cert.subject.rfc4514_string()


def _ext(cert: x509.Certificate, kind: type[Any]) -> Any:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _check_signer_cert(leaf: x509.Certificate) -> None:
    who = f"signing certificate ({common_name(leaf)})"
    constraints = _ext(leaf, x509.BasicConstraints)
    if constraints is not None and constraints.ca:
        raise CertificateError(f"{who} is a CA certificate; C2PA needs an end-entity certificate")
    usage = _ext(leaf, x509.KeyUsage)
    if usage is None or not usage.digital_signature:
        raise CertificateError(f"{who} lacks KeyUsage digitalSignature")
    eku = _ext(leaf, x509.ExtendedKeyUsage)
    if eku is None or ExtendedKeyUsageOID.EMAIL_PROTECTION not in eku:
        raise CertificateError(f"{who} lacks ExtendedKeyUsage emailProtection")
    if _ext(leaf, x509.AuthorityKeyIdentifier) is None:
        raise CertificateError(f"{who} lacks an AuthorityKeyIdentifier")
    if leaf.issuer == leaf.subject:
        raise CertificateError(f"{who} is self-signed; C2PA needs a CA-issued certificate")
    alg_for_public_key(leaf.public_key())


def _check_time(cert: x509.Certificate, at: dt.datetime, role: str) -> None:
    if at < cert.not_valid_before_utc:
        start = cert.not_valid_before_utc.isoformat()
        raise CertificateError(f"{role} ({common_name(cert)}) is not valid before {start}")
    if at > cert.not_valid_after_utc:
        raise CertificateError(
            f"{role} ({common_name(cert)}) expired on {cert.not_valid_after_utc.isoformat()}"
        )


def _check_issued_by(child: x509.Certificate, issuer: x509.Certificate, what: str) -> None:
    try:
        child.verify_directly_issued_by(issuer)
    except ValueError as exc:
        raise CertificateError(f"{what}: {exc}") from exc
    except InvalidSignature as exc:
        raise CertificateError(f"{what}: the signature does not verify") from exc
    except TypeError as exc:
        raise CertificateError(f"{what}: unsupported issuer key or algorithm") from exc


def _check_issuer_is_ca(issuer: x509.Certificate, below: int, role: str) -> None:
    constraints = _ext(issuer, x509.BasicConstraints)
    if constraints is None or not constraints.ca:
        raise CertificateError(
            f"{role} ({common_name(issuer)}) issues a certificate but is not a CA"
        )
    usage = _ext(issuer, x509.KeyUsage)
    if usage is not None and not usage.key_cert_sign:
        raise CertificateError(f"{role} ({common_name(issuer)}) lacks KeyUsage keyCertSign")
    if constraints.path_length is not None and below > constraints.path_length:
        raise CertificateError(
            f"{role} ({common_name(issuer)}) has path length {constraints.path_length} "
            f"but {below} CA(s) below it"
        )


def check_signing_chain(
    chain_pem: bytes,
    at: dt.datetime | None = None,
    trust_root_pem: bytes | None = None,
) -> None:
    """Raise :class:`CertificateError` (one line) unless the chain can sign C2PA claims.

    ``chain_pem`` holds the signer certificate first, then its issuers in order (the
    root may be included or left out). ``at`` defaults to now (a naive datetime is
    taken as UTC). With ``trust_root_pem``, the chain must end at that root. See the
    module docstring for the full list of rules.
    """
    when = dt.datetime.now(dt.UTC) if at is None else at
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    certs = load_chain(chain_pem)
    # Order first: an intermediate placed first is "out of order", not "a CA signer".
    for index in range(len(certs) - 1):
        child, issuer = certs[index], certs[index + 1]
        what = (
            f"chain out of order: certificate {index} ({common_name(child)}) "
            f"is not issued by certificate {index + 1} ({common_name(issuer)})"
        )
        _check_issued_by(child, issuer, what)
        _check_issuer_is_ca(issuer, index, f"chain certificate {index + 1}")
    _check_signer_cert(certs[0])
    for index, cert in enumerate(certs):
        _check_time(
            cert, when, "signing certificate" if index == 0 else f"chain certificate {index}"
        )
    if trust_root_pem is not None:
        _check_against_root(certs, trust_root_pem, when)


def _check_against_root(
    certs: list[x509.Certificate], trust_root_pem: bytes, when: dt.datetime
) -> None:
    try:
        root = x509.load_pem_x509_certificate(trust_root_pem)
    except ValueError as exc:
        raise CertificateError(f"the trust root is not a PEM certificate: {exc}") from exc
    _check_time(root, when, "trust root")
    last = certs[-1]
    if last == root:
        return
    _check_issued_by(
        last,
        root,
        f"the chain does not end at the trust root ({common_name(root)}): "
        f"its last certificate ({common_name(last)}) is not issued by it",
    )
    _check_issuer_is_ca(root, len(certs) - 1, "trust root")
