"""Signing JPEG, PNG and WebP with the dev PKI through c2pa-python, and reading them back."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import c2pa
import numpy as np
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from PIL import Image

from consentry.errors import CertificateError, ManifestError
from consentry.provenance.c2pa_io import (
    TRAINED_ALGORITHMIC_MEDIA,
    ManifestReport,
    minimal_manifest,
    read_asset,
    sign_asset,
)
from consentry.provenance.certs import PkiPaths, create_dev_pki, load_signing_identity
from consentry.provenance.signer import (
    CallbackSigner,
    LocalKeySigner,
    ManifestSigner,
    c2pa_signer,
    signer_from_identity,
)

FORMATS = {"image/jpeg": "JPEG", "image/png": "PNG", "image/webp": "WEBP"}


def make_image(mime: str, size: int = 256, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    gradient = np.linspace(0, 255, size, dtype=np.float32)
    pixels = np.stack(
        [
            np.add.outer(gradient, gradient) / 2,
            np.tile(gradient, (size, 1)),
            rng.random((size, size)) * 255,
        ],
        axis=-1,
    ).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, FORMATS[mime])
    return out.getvalue()


@pytest.fixture(scope="module", params=["es256", "ed25519"])
def pki(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> PkiPaths:
    home = tmp_path_factory.mktemp(f"home-{request.param}")
    return create_dev_pki(home, alg=request.param)


def _home(pki: PkiPaths) -> Path:
    return pki.dir.parent


def _manifest() -> dict[str, Any]:
    return minimal_manifest(
        "generated portrait",
        "consentry/0.1.0",
        actions=[{"action": "c2pa.edited", "description": "post-check crop"}],
        assertions=[{"label": "org.consentry.decision", "data": {"decision": "allow", "n": 1}}],
    )


def _check_actions(report: ManifestReport) -> None:
    actions = report.assertions["c2pa.actions.v2"]["actions"]
    assert actions[0]["action"] == "c2pa.created"
    assert actions[0]["digitalSourceType"] == TRAINED_ALGORITHMIC_MEDIA
    assert actions[1]["action"] == "c2pa.edited"
    assert report.assertions["org.consentry.decision"] == {"decision": "allow", "n": 1}


@pytest.mark.parametrize("mime", list(FORMATS))
def test_sign_and_read_back(pki: PkiPaths, mime: str) -> None:
    signer = signer_from_identity(load_signing_identity(_home(pki)))
    original = make_image(mime)
    signed = sign_asset(original, mime, _manifest(), signer)
    assert signed != original

    trusted = read_asset(signed, mime, pki.root_cert.read_bytes())
    assert trusted.state == "trusted", trusted.codes
    assert trusted.trusted and trusted.codes == []
    assert trusted.active_manifest is not None
    assert trusted.active_manifest["title"] == "generated portrait"
    assert trusted.active_manifest["claim_generator_info"][0]["name"] == "consentry"
    assert trusted.active_manifest["signature_info"]["alg"].lower() == signer.alg
    _check_actions(trusted)
    # thumbnails are off by default
    assert "thumbnail" not in trusted.active_manifest
    assert not any("thumbnail" in label for label in trusted.assertions)

    untrusted = read_asset(signed, mime, None)
    assert untrusted.state == "valid_untrusted"
    assert "signingCredential.untrusted" in untrusted.codes
    _check_actions(untrusted)

    # the image itself still decodes
    assert Image.open(io.BytesIO(signed)).size == (256, 256)


def test_thumbnail_on_request(pki: PkiPaths) -> None:
    signer = signer_from_identity(load_signing_identity(_home(pki)))
    signed = sign_asset(make_image("image/jpeg"), "image/jpeg", _manifest(), signer, thumbnail=True)
    report = read_asset(signed, "image/jpeg", pki.root_cert.read_bytes())
    assert report.state == "trusted"
    assert report.active_manifest is not None and "thumbnail" in report.active_manifest


def test_unsigned_image_has_no_manifest(pki: PkiPaths) -> None:
    for mime in FORMATS:
        report = read_asset(make_image(mime), mime, pki.root_cert.read_bytes())
        assert report == ManifestReport("none")


@pytest.mark.parametrize("mime", ["image/gif", "image/bmp", "application/pdf", "text/plain"])
def test_unsupported_types_are_refused(pki: PkiPaths, mime: str) -> None:
    signer = signer_from_identity(load_signing_identity(_home(pki)))
    with pytest.raises(ManifestError, match="only image/jpeg"):
        sign_asset(b"data", mime, _manifest(), signer)
    with pytest.raises(ManifestError):
        read_asset(b"data", mime, None)


def test_bad_anchors_are_a_certificate_error() -> None:
    with pytest.raises(CertificateError):
        read_asset(make_image("image/jpeg"), "image/jpeg", b"not pem")


# -- signers -------------------------------------------------------------------------------


@pytest.fixture
def es256_home(tmp_path: Path) -> Path:
    create_dev_pki(tmp_path)
    return tmp_path


def test_es256_signature_is_raw_r_s(es256_home: Path) -> None:
    identity = load_signing_identity(es256_home)
    signer = signer_from_identity(identity)
    signature = signer.sign(b"claim bytes")
    assert len(signature) == 64
    r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    public = identity.certificate.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    public.verify(encode_dss_signature(r, s), b"claim bytes", ec.ECDSA(hashes.SHA256()))


def test_callback_signer_key_never_reaches_c2pa(
    es256_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    identity = load_signing_identity(es256_home)
    chain_pem = identity.chain_pem
    # the private key object lives only in this closure
    key = serialization.load_pem_private_key(
        (es256_home / "pki" / "signer.key").read_bytes(), password=None
    )
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    calls: list[int] = []

    def kms_sign(data: bytes) -> bytes:
        calls.append(len(data))
        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    seen: list[Any] = []
    real_from_callback = c2pa.Signer.from_callback

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.extend(args)
        seen.extend(kwargs.values())
        return real_from_callback(*args, **kwargs)

    def no_from_info(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the key must not be handed to c2pa")

    monkeypatch.setattr(c2pa.Signer, "from_callback", spy)
    monkeypatch.setattr(c2pa.Signer, "from_info", no_from_info)

    signer = CallbackSigner(kms_sign, chain_pem, "es256")
    assert isinstance(signer, ManifestSigner)
    signed = sign_asset(make_image("image/png"), "image/png", _manifest(), signer)
    assert calls, "c2pa never called the callback"
    for arg in seen:
        text = arg if isinstance(arg, (str, bytes)) else repr(arg)
        assert "PRIVATE KEY" not in (text if isinstance(text, str) else text.decode("latin-1"))
    report = read_asset(signed, "image/png", (es256_home / "pki" / "root.pem").read_bytes())
    assert report.state == "trusted"


def test_der_signatures_from_a_kms_are_normalised(es256_home: Path) -> None:
    identity = load_signing_identity(es256_home)
    assert identity.key_pem is not None
    key = serialization.load_pem_private_key(identity.key_pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    produced: list[bytes] = []

    def der_sign(data: bytes) -> bytes:
        produced.append(key.sign(data, ec.ECDSA(hashes.SHA256())))
        return produced[-1]

    signed = sign_asset(
        make_image("image/jpeg"),
        "image/jpeg",
        _manifest(),
        CallbackSigner(der_sign, identity.chain_pem, "es256"),
    )
    r, s = decode_dss_signature(produced[-1])
    assert r.to_bytes(32, "big") + s.to_bytes(32, "big") in signed  # COSE carries r || s
    assert produced[-1] not in signed
    root = (es256_home / "pki" / "root.pem").read_bytes()
    assert read_asset(signed, "image/jpeg", root).state == "trusted"


def test_ed25519_callback_signer(tmp_path: Path) -> None:
    create_dev_pki(tmp_path, alg="ed25519")
    identity = load_signing_identity(tmp_path)
    assert identity.key_pem is not None
    key = serialization.load_pem_private_key(identity.key_pem, password=None)
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    signer = CallbackSigner(key.sign, identity.chain_pem, "ed25519")
    signed = sign_asset(make_image("image/webp"), "image/webp", _manifest(), signer)
    root = (tmp_path / "pki" / "root.pem").read_bytes()
    assert read_asset(signed, "image/webp", root).state == "trusted"


def test_failing_callback_surfaces_its_error(es256_home: Path) -> None:
    identity = load_signing_identity(es256_home)

    def broken(data: bytes) -> bytes:
        raise RuntimeError("kms unreachable")

    with pytest.raises(ManifestError, match="kms unreachable"):
        sign_asset(
            make_image("image/jpeg"),
            "image/jpeg",
            _manifest(),
            CallbackSigner(broken, identity.chain_pem, "es256"),
        )


def test_signature_by_the_wrong_key_is_refused_at_signing(es256_home: Path) -> None:
    identity = load_signing_identity(es256_home)
    stranger = ec.generate_private_key(ec.SECP256R1())

    def wrong(data: bytes) -> bytes:
        return stranger.sign(data, ec.ECDSA(hashes.SHA256()))

    with pytest.raises(ManifestError, match="c2pa could not sign"):
        sign_asset(
            make_image("image/jpeg"),
            "image/jpeg",
            _manifest(),
            CallbackSigner(wrong, identity.chain_pem, "es256"),
        )


def test_local_key_signer_checks_key_and_alg(es256_home: Path, tmp_path: Path) -> None:
    identity = load_signing_identity(es256_home)
    assert identity.key_pem is not None
    with pytest.raises(CertificateError, match="cannot sign as"):
        LocalKeySigner(identity.key_pem, identity.chain_pem, "ed25519")
    with pytest.raises(CertificateError, match="unsupported"):
        CallbackSigner(lambda data: data, identity.chain_pem, "rs1")
    with pytest.raises(CertificateError, match="cannot load"):
        LocalKeySigner(b"junk", identity.chain_pem)
    assert "PRIVATE" not in repr(signer_from_identity(identity))
    other = tmp_path / "other"
    create_dev_pki(other)
    other_key = load_signing_identity(other).key_pem
    assert other_key is not None
    with pytest.raises(CertificateError, match="does not belong"):
        LocalKeySigner(other_key, identity.chain_pem)
    # a callback claiming the wrong algorithm for the certificate is refused up front
    mismatched = CallbackSigner(lambda data: b"x" * 64, identity.chain_pem, "ed25519")
    with pytest.raises(CertificateError, match="cannot sign as ed25519"):
        sign_asset(make_image("image/jpeg"), "image/jpeg", _manifest(), mismatched)


def test_c2pa_signer_checks_the_chain_first(es256_home: Path) -> None:
    identity = load_signing_identity(es256_home)
    signer = signer_from_identity(identity)
    with c2pa_signer(signer) as native:
        assert native.reserve_size() > 0
    intermediate_first = b"".join(
        part + b"-----END CERTIFICATE-----\n"
        for part in identity.chain_pem.split(b"-----END CERTIFICATE-----\n")[:2][::-1]
    )
    with pytest.raises(CertificateError, match="out of order"):
        c2pa_signer(CallbackSigner(signer.sign, intermediate_first, "es256"))


def test_minimal_manifest_shape() -> None:
    manifest = minimal_manifest("t", "gen", format="image/png")
    assert manifest["claim_generator_info"] == [{"name": "gen"}]
    assert manifest["format"] == "image/png"
    [actions] = manifest["assertions"]
    assert actions["label"] == "c2pa.actions.v2"
    assert actions["data"]["actions"][0]["action"] == "c2pa.created"
    assert actions["data"]["actions"][0]["digitalSourceType"] == TRAINED_ALGORITHMIC_MEDIA
    own = minimal_manifest("t", "gen", actions=[{"action": "c2pa.created", "description": "d"}])
    first = own["assertions"][0]["data"]["actions"]
    assert len(first) == 1 and first[0]["description"] == "d"
    assert first[0]["digitalSourceType"] == TRAINED_ALGORITHMIC_MEDIA


bad_manifests: list[tuple[str, Callable[[], Any]]] = [
    (
        "second_created",
        lambda: minimal_manifest(
            "t", "g", actions=[{"action": "c2pa.edited"}, {"action": "c2pa.created"}]
        ),
    ),
    (
        "actions_as_assertion",
        lambda: minimal_manifest("t", "g", assertions=[{"label": "c2pa.actions", "data": {}}]),
    ),
    ("assertion_without_data", lambda: minimal_manifest("t", "g", assertions=[{"label": "x"}])),
    ("action_without_name", lambda: minimal_manifest("t", "g", actions=[{"when": "now"}])),
    ("no_generator", lambda: minimal_manifest("t", "")),
]


@pytest.mark.parametrize("build", [pytest.param(b, id=n) for n, b in bad_manifests])
def test_minimal_manifest_refuses(build: Callable[[], Any]) -> None:
    with pytest.raises(ManifestError):
        build()
