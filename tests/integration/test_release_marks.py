"""A real gateway release carries its marks: the watermark decodes from the released
PNG, the decision's signed statement holds the release id and both fingerprints, and
the manifest carries them as c2pa.soft-binding assertions that c2pa reads back."""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from consentry import Registry
from consentry.faces.engines import get_engine
from consentry.gate import Gateway, RunRequest, run_job
from consentry.generation.tiny import build_tiny_pipeline
from consentry.provenance.certs import create_dev_pki
from consentry.provenance.fingerprint import ISCC_ALG, PDQ_ALG, Fingerprint, fingerprint
from consentry.provenance.verify import verify_media
from consentry.provenance.watermark import WATERMARK_ALG, decode
from consentry.registry.decisions import decision_of_release, get_decision
from consentry.registry.statements import statement_of


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_pipeline(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture
def gateway(tmp_path: Path, sqlite_url: str) -> Iterator[Gateway]:
    registry = Registry.init(tmp_path / "home", sqlite_url)
    create_dev_pki(registry.home.root)
    registry.add_grantee("Studio")
    yield Gateway(registry, get_engine("sface"))
    registry.close()


def test_a_release_is_marked_logged_and_bound_in_its_manifest(
    gateway: Gateway, model: Path
) -> None:
    registry = gateway.registry
    request = RunRequest("Studio", "generate", "a red house", model, steps=4, size=256)
    receipt = run_job(gateway, request)
    assert receipt.allowed and len(receipt.outputs) == 1
    signed = receipt.outputs[0]
    pixels = np.asarray(Image.open(io.BytesIO(signed)).convert("RGB"))

    decision = get_decision(registry, receipt.decision_id or "")
    statement = statement_of(decision)
    release = statement["release"]
    assert decision.release_id == release["id"] and len(release["outputs"]) == 1
    mark = release["outputs"][0]
    assert mark["watermark"] == WATERMARK_ALG
    assert Fingerprint.from_json(mark) == fingerprint(pixels)  # of the released pixels
    assert decode(pixels).release_id == release["id"]
    assert decision_of_release(registry, release["id"]).id == decision.id  # type: ignore[union-attr]

    result = verify_media(registry, signed, "image/png")
    assert result.ok, result.consent_reason
    by_alg = {b["alg"]: b["value"] for b in result.soft_bindings}
    assert set(by_alg) == {ISCC_ALG, PDQ_ALG, WATERMARK_ALG}
    assert base64.b64decode(by_alg[WATERMARK_ALG]).hex() == release["id"]
    assert base64.b64decode(by_alg[PDQ_ALG]).hex() == mark["pdq"]
    assert registry.verify_log().ok  # the new statement key verifies


def test_a_refusal_carries_no_release(gateway: Gateway, model: Path) -> None:
    receipt = run_job(gateway, RunRequest("Nobody", "generate", "a house", model, steps=4))
    assert not receipt.allowed
    assert receipt.decision_id is None or "release" not in statement_of(
        get_decision(gateway.registry, receipt.decision_id)
    )
