"""Attacks on recovery from durable marks: a release's watermark copied onto another
image, and an image that only looks like a release (its unmarked original).

A real release goes through the gateway (real registry, log, watermark, fingerprints
and C2PA signing); the backend hands back a real photo, so no model is needed. Each
test asserts the attack is not recovered *and* that the honest equivalent (the same
release with its manifest stripped by a JPEG re-encode) is recovered, with its decision.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from consentry import Registry
from consentry.faces.engines import get_engine
from consentry.gate import Gateway, RunRequest, run_job
from consentry.generation.backends.base import PriorRef
from consentry.provenance import watermark as wm
from consentry.provenance.certs import create_dev_pki
from consentry.provenance.verify import verify_media
from consentry.registry.decisions import get_decision

DATA = Path(__file__).resolve().parents[2] / "consentry" / "data" / "faces"


class PhotoBackend:
    """Returns a real photo as the model's output (the model is not under test)."""

    def __init__(self, photo: Path) -> None:
        self.photo = photo

    def text2img(
        self, prompt: str, steps: int, size: int, seed: int, prior: PriorRef | None = None,
        **kw: Any,
    ) -> list[Any]:  # fmt: skip
        return [Image.open(self.photo).convert("RGB")]

    def img2img(self, *args: Any, **kw: Any) -> list[Any]:
        raise AssertionError("not used")


def jpeg(data: bytes, quality: int = 90) -> bytes:
    """Re-encoded as JPEG: what an upload pipeline does; the C2PA manifest is gone."""
    buffer = io.BytesIO()
    Image.open(io.BytesIO(data)).convert("RGB").save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def png_of(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


@dataclass
class Released:
    registry: Registry
    signed: bytes
    decision_id: str
    release_id: str


@pytest.fixture
def released(tmp_path: Path, sqlite_url: str) -> Iterator[Released]:
    registry = Registry.init(tmp_path / "home", sqlite_url)
    create_dev_pki(registry.home.root)
    registry.add_grantee("Studio")
    gateway = Gateway(registry, get_engine("sface"))
    request = RunRequest("Studio", "generate", "a landscape", tmp_path, steps=1)
    receipt = run_job(gateway, request, PhotoBackend(DATA / "astronaut.jpg"))  # type: ignore[arg-type]
    assert receipt.allowed, receipt.reasons
    decision = get_decision(registry, receipt.decision_id or "")
    assert decision.release_id is not None
    yield Released(registry, receipt.outputs[0], decision.id, decision.release_id)
    registry.close()


def _honest_recovered(world: Released) -> None:
    stripped = jpeg(world.signed)
    result = verify_media(world.registry, stripped, "image/jpeg")
    assert result.c2pa_state == "none" and not result.ok
    assert result.recovered, result.consent_reason
    assert result.decision_id == world.decision_id
    assert "provenance recovered, manifest stripped" in result.consent_reason


@pytest.mark.attack("watermark copied onto another image")
def test_a_copied_watermark_is_not_recovered(released: Released) -> None:
    other = np.asarray(Image.open(DATA / "obama2.jpg").convert("RGB"))
    forged = wm.embed(other, released.release_id)  # the algorithm is public: anyone can
    assert wm.decode(forged).release_id == released.release_id
    result = verify_media(released.registry, jpeg(png_of(forged), 95), "image/jpeg")
    assert not result.recovered and not result.ok and result.decision_id is None
    assert "fingerprints disagree" in result.consent_reason
    _honest_recovered(released)


@pytest.mark.attack("look-alike of a release without its watermark")
def test_an_image_resembling_a_release_is_not_recovered(released: Released) -> None:
    original = Image.open(DATA / "astronaut.jpg").convert("RGB")  # the release, unmarked
    buffer = io.BytesIO()
    original.save(buffer, "JPEG", quality=90)
    result = verify_media(released.registry, buffer.getvalue(), "image/jpeg")
    assert not result.recovered and result.decision_id is None
    assert "no watermark" in result.consent_reason
    _honest_recovered(released)


@pytest.mark.attack("watermark id of no release")
def test_a_watermark_naming_no_release_is_not_recovered(released: Released) -> None:
    pixels = np.asarray(Image.open(io.BytesIO(jpeg(released.signed))).convert("RGB"))
    unknown = wm.embed(pixels, "00" * 8 if released.release_id != "00" * 8 else "11" * 8)
    result = verify_media(released.registry, png_of(unknown), "image/png")
    assert not result.recovered and "names no release" in result.consent_reason
    _honest_recovered(released)
