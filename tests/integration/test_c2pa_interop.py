"""Our C2PA outputs verify as Trusted with an independent implementation, encypher-c2pa.

``sign_asset`` embeds manifests through c2pa-python (c2pa-rs); ``read_asset`` reads them with
the same library, so the other provenance tests cannot catch a bug both halves share.
encypher-c2pa (PyPI, Apache-2.0) is a verification-only C2PA 2.4 SDK with its own Rust core:
its wheel's SBOM lists no c2pa-rs crate (its only C2PA-project crate is ``c2pa-text``, for
text carriers), and its README says it "shares no code with other C2PA implementations".

Each signed JPEG/PNG (dev PKI, ES256 and Ed25519) must come out of ``encypher_c2pa.verify``
with the claim signature valid, every hashed assertion and the data hash matching, and the
signer trusted *for the material we supplied*: our exported root, with its bundled trust
lists switched off. It must also read our assertions back as we wrote them. Negative
controls, same files: a copy whose pixels were edited (the manifest spliced back at its
offset) fails the data hash in both implementations; the untouched file verified without
our root (bundled lists only, no anchors at all, or another PKI's root) is not trusted.

encypher-c2pa is not in the project's dev extras yet: without it these tests skip.
Everything runs offline: online checks and failure telemetry are switched off through the
SDK's environment variables, and its configuration folder points into a temporary folder.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import encypher_c2pa as enc
import numpy as np
import pytest
from PIL import Image

from consentry.provenance.c2pa_io import (
    TRAINED_ALGORITHMIC_MEDIA,
    minimal_manifest,
    read_asset,
    sign_asset,
)
from consentry.provenance.certs import PkiPaths, create_dev_pki, load_signing_identity
from consentry.provenance.signer import signer_from_identity

FORMATS = {"image/jpeg": "JPEG", "image/png": "PNG"}
ALGS = ("es256", "ed25519")
TDM_ENTRIES = (
    "cawg.ai_generative_training",
    "cawg.ai_inference",
    "cawg.ai_training",
    "cawg.data_mining",
)
CONSENT = {
    "grant_id": "grt_5f0c1d2e3a4b5c6d7e8f",
    "subject_id": "sub_0a1b2c3d4e5f60718293",
    "purposes": ["restore"],
    "decision": "allow",
    "log_index": 42,
    "checkpoint_size": 43,
}
GENERATOR = "consentry/0.1.0"


# -- environment -------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _offline_encypher(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No network, no telemetry, nothing written under the user's ~/.config."""
    monkeypatch.setenv("ENCYPHER_C2PA_ONLINE", "off")
    monkeypatch.setenv("ENCYPHER_C2PA_TELEMETRY", "off")
    monkeypatch.setenv("ENCYPHER_C2PA_UPDATE_CHECK", "off")
    monkeypatch.setenv("ENCYPHER_C2PA_CONFIG_DIR", str(tmp_path / "encypher-config"))


def verify(data: bytes, mime: str, **trust: Any) -> dict[str, Any]:
    """encypher-c2pa's report for ``data``; never online, never telemetry."""
    report = enc.verify(bytes(data), mime, online=False, **trust)
    assert isinstance(report, Mapping)
    return dict(report)


def codes(report: Mapping[str, Any], kind: str) -> list[str]:
    return [entry["code"] for entry in report["validation_results"][kind]]


# -- assets --------------------------------------------------------------------------------


def make_image(mime: str, size: int = 256, seed: int = 7) -> bytes:
    """A gradient with noise: compresses like a photo, not like a flat test card."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 200, size, dtype=np.float32)
    base = np.stack(
        [np.add.outer(ramp, ramp) / 2, np.tile(ramp, (size, 1)), np.tile(ramp[:, None], (1, size))],
        axis=-1,
    )
    pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    return encode(pixels, mime)


def encode(pixels: np.ndarray, mime: str) -> bytes:
    out = io.BytesIO()
    options = {"quality": 90} if mime == "image/jpeg" else {}
    Image.fromarray(pixels).save(out, FORMATS[mime], **options)
    return out.getvalue()


def decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def manifest() -> dict[str, Any]:
    """Shaped like Consentry's real outputs: created by a trained model, no TDM, consent."""
    return minimal_manifest(
        "generated portrait",
        GENERATOR,
        assertions=[
            {
                "label": "cawg.training-mining",
                "data": {"entries": {name: {"use": "notAllowed"} for name in TDM_ENTRIES}},
            },
            {"label": "org.consentry.consent", "data": dict(CONSENT)},
        ],
    )


@pytest.fixture(scope="module", params=ALGS)
def pki(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> PkiPaths:
    return create_dev_pki(tmp_path_factory.mktemp(f"interop-{request.param}"), alg=request.param)


@pytest.fixture(scope="module")
def stranger_root(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The root of another, unrelated dev PKI."""
    return create_dev_pki(tmp_path_factory.mktemp("stranger")).root_cert.read_text()


@pytest.fixture(scope="module")
def signed(pki: PkiPaths) -> Iterator[dict[str, bytes]]:
    signer = signer_from_identity(load_signing_identity(pki.dir.parent))
    yield {mime: sign_asset(make_image(mime), mime, manifest(), signer) for mime in FORMATS}


def edited_copy(signed_data: bytes, mime: str) -> bytes:
    """The signed file with a block of pixels changed and its manifest left where it was.

    The pixels are decoded, a 32x32 block is inverted and the image re-encoded the way the
    original was (same encoder, same settings, so the bytes before the manifest are the
    same); then the manifest bytes (the exclusion range of the ``c2pa.hash.data`` hard
    binding, as encypher-c2pa reports it: c2pa-python's reader hides that assertion) are
    spliced back in at their offset. The result is a well-formed file that carries the
    original manifest over different pixels.
    """
    store = verify(signed_data, mime, no_default_trust=True)["manifest_report"]
    active = store["manifests"][store["active_manifest"]]
    (binding,) = [a["data"] for a in active["assertions"] if a["label"] == "c2pa.hash.data"]
    (exclusion,) = binding["exclusions"]
    start, length = exclusion["start"], exclusion["length"]
    pixels = decode(signed_data).copy()
    pixels[96:128, 96:128] = 255 - pixels[96:128, 96:128]
    reencoded = encode(pixels, mime)
    assert reencoded[:start] == signed_data[:start], "the re-encoded header differs"
    edited = reencoded[:start] + signed_data[start : start + length] + reencoded[start:]
    assert not np.array_equal(decode(edited), decode(signed_data))
    return edited


# -- positive: trusted, and our assertions read back ----------------------------------------


@pytest.mark.parametrize("mime", list(FORMATS))
def test_trusted_by_an_independent_verifier(
    pki: PkiPaths, signed: dict[str, bytes], mime: str
) -> None:
    data = signed[mime]
    root_pem = pki.root_cert.read_bytes()
    assert read_asset(data, mime, root_pem).state == "trusted"  # c2pa-rs agrees

    report = verify(data, mime, trust_pem=root_pem.decode(), no_default_trust=True)
    assert report["present"] is True
    assert report["integrity"] == "valid"
    assert report["signature"] == "valid"
    assert report["hard_binding"] == "match"
    assert report["trust"]["status"] == "valid_for_supplied_material"
    assert report["trust"]["basis"] == "caller_supplied_static_material"
    assert report["validation_state"] == "Trusted"
    assert codes(report, "failure") == []
    success = codes(report, "success")
    for code in (
        "claimSignature.validated",
        "assertion.dataHash.match",
        "signingCredential.trusted",
    ):
        assert code in success, (code, success)
    # every assertion the claim references was hashed and matched, ours included
    hashed = {
        entry["url"].rsplit("/", 1)[-1]
        for entry in report["validation_results"]["success"]
        if entry["code"] == "assertion.hashedURI.match"
    }
    assert {
        "c2pa.actions.v2",
        "cawg.training-mining",
        "org.consentry.consent",
        "c2pa.hash.data",
    } <= hashed


@pytest.mark.parametrize("mime", list(FORMATS))
def test_independent_verifier_reads_our_assertions(
    pki: PkiPaths, signed: dict[str, bytes], mime: str
) -> None:
    report = verify(signed[mime], mime, trust_pem=pki.root_cert.read_text(), no_default_trust=True)
    store = report["manifest_report"]
    active = store["manifests"][store["active_manifest"]]
    assertions = {a["label"]: a["data"] for a in active["assertions"]}

    first = assertions["c2pa.actions.v2"]["actions"][0]
    assert first["action"] == "c2pa.created"
    assert first["digitalSourceType"] == TRAINED_ALGORITHMIC_MEDIA
    assert assertions["org.consentry.consent"] == CONSENT
    tdm = assertions["cawg.training-mining"]["entries"]
    assert tdm == {name: {"use": "notAllowed"} for name in TDM_ENTRIES}
    # encypher applies the CAWG constrained-use rules itself: nothing comes out allowed
    (effective,) = [
        entry["details"]["entries"]
        for entry in report["validation_results"]["informational"]
        if entry["code"] == "com.encypher.cawg.trainingMining.effectiveUse"
    ]
    assert {name: e["effectiveUse"] for name, e in effective.items()} == dict.fromkeys(
        TDM_ENTRIES, "notAllowed"
    )
    assert active["signature_info"]["common_name"] == "Consentry dev C2PA signer"
    assert active["claim_generator_info"]["name"] == "consentry"


# -- negative controls -----------------------------------------------------------------------


@pytest.mark.parametrize("mime", list(FORMATS))
def test_edited_pixels_fail_in_both_implementations(
    pki: PkiPaths, signed: dict[str, bytes], mime: str
) -> None:
    edited = edited_copy(signed[mime], mime)
    root_pem = pki.root_cert.read_bytes()

    ours = read_asset(edited, mime, root_pem)
    assert ours.state == "invalid"
    assert "assertion.dataHash.mismatch" in ours.codes

    report = verify(edited, mime, trust_pem=root_pem.decode(), no_default_trust=True)
    assert report["present"] is True
    assert report["integrity"] == "invalid"
    assert report["hard_binding"] == "mismatch"
    assert report["validation_state"] != "Trusted"
    assert "assertion.dataHash.mismatch" in codes(report, "failure")
    # the signature over the claim itself is still good: only the binding broke
    assert report["signature"] == "valid"


@pytest.mark.parametrize("mime", list(FORMATS))
def test_not_trusted_without_our_root(
    signed: dict[str, bytes], stranger_root: str, mime: str
) -> None:
    data = signed[mime]

    # 1. its bundled trust lists only (C2PA trust list, IPTC, Encypher roots)
    bundled = verify(data, mime)
    assert bundled["integrity"] == "valid"
    assert bundled["trust"]["status"] == "not_valid_for_supplied_material"
    assert bundled["validation_state"] != "Trusted"
    assert "signingCredential.untrusted" in codes(bundled, "failure")
    assert "signingCredential.trusted" not in codes(bundled, "success")

    # 2. no trust material at all: the signature is checked, trust is not evaluated
    bare = verify(data, mime, no_default_trust=True)
    assert bare["integrity"] == "valid"
    assert bare["trust"]["status"] == "not_evaluated"
    assert bare["validation_state"] == "Valid"
    assert "signingCredential.trusted" not in codes(bare, "success")

    # 3. another PKI's root as the only anchor
    stranger = verify(data, mime, trust_pem=stranger_root, no_default_trust=True)
    assert stranger["integrity"] == "valid"
    assert stranger["trust"]["status"] == "not_valid_for_supplied_material"
    assert stranger["validation_state"] != "Trusted"
    assert "signingCredential.untrusted" in codes(stranger, "failure")


@pytest.mark.parametrize("mime", list(FORMATS))
def test_unsigned_image_has_no_manifest(pki: PkiPaths, mime: str) -> None:
    report = verify(
        make_image(mime), mime, trust_pem=pki.root_cert.read_text(), no_default_trust=True
    )
    assert report["present"] is False
    assert report["validation_state"] != "Trusted"
