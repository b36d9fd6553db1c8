"""Recovery end to end: a consented release with a registered face, its manifest
stripped by a JPEG re-encode, is reported by ``consentry verify`` (a subprocess) as
"provenance recovered, manifest stripped" and is no finding of ``audit``; the same
face in the unmarked photo is still a finding."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from PIL import Image

from consentry import Registry
from consentry.faces.engines import get_engine
from consentry.gate import Gateway, RunRequest, run_job
from consentry.generation.backends.base import PriorRef
from consentry.identity.enroll import enroll_photos
from consentry.provenance.audit import audit_paths
from tests.support.cli import Cli

DATA = Path(__file__).resolve().parents[2] / "consentry" / "data" / "faces"


class PhotoBackend:
    """Returns a real photo as the model's output (the model is not under test)."""

    def text2img(
        self, prompt: str, steps: int, size: int, seed: int, prior: PriorRef | None = None,
        **kw: Any,
    ) -> list[Any]:  # fmt: skip
        return [Image.open(DATA / "obama2.jpg").convert("RGB")]

    def img2img(self, *args: Any, **kw: Any) -> list[Any]:
        raise AssertionError("not used")


def _jpeg(data: bytes) -> bytes:
    buffer = io.BytesIO()
    Image.open(io.BytesIO(data)).convert("RGB").save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def test_a_stripped_release_is_recovered_by_verify_and_audit(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "home")
    cli.ok("init")
    engine = get_engine("sface")
    with Registry.open(cli.home) as registry:
        obama = registry.add_subject("Barack Obama").id
        enroll_photos(registry, engine, obama, [DATA / "obama.jpg"])
        registry.add_grantee("Studio")
        grant = registry.grant(obama, "Studio", ["generate"])
        gateway = Gateway(registry, engine)
        request = RunRequest("Studio", "generate", "Obama waving", tmp_path, steps=1)
        receipt = run_job(gateway, request, PhotoBackend())  # type: ignore[arg-type]
        assert receipt.allowed, receipt.reasons
        media = tmp_path / "media"
        media.mkdir()
        (media / "stripped.jpg").write_bytes(_jpeg(receipt.outputs[0]))
        (media / "unmarked.jpg").write_bytes(_jpeg((DATA / "obama2.jpg").read_bytes()))
        report = audit_paths(registry, engine, [media])
    by_name = {Path(item.path).name: item for item in report.items}
    assert by_name["stripped.jpg"].consent == "recovered"
    assert by_name["stripped.jpg"].findings == []
    assert [f.subject_id for f in by_name["unmarked.jpg"].findings] == [obama]

    out = cli.ok("verify", str(media / "stripped.jpg"))
    assert "provenance recovered, manifest stripped" in out
    assert receipt.decision_id in out and grant.id in out
    refused = cli("verify", str(media / "unmarked.jpg"))
    assert refused.code == 1 and "no watermark" in refused.out + refused.err
