"""Jobs through the gateway with the real tiny diffusers pipeline: run, post-check,
release-time revocation check, logging and signing."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from consentry import Registry
from consentry.gate import Gateway, RunRequest, run_job
from consentry.generation.backends.base import PriorRef
from consentry.generation.backends.diffusers_backend import DiffusersBackend
from consentry.generation.tiny import build_tiny_pipeline
from consentry.provenance.verify import verify_media
from consentry.registry.decisions import get_decision
from tests.support.cli import Cli
from tests.support.faces import PHOTOS
from tests.support.worlds import OBAMA, new_registry, sface_gateway


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_pipeline(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture
def world(tmp_path: Path, sqlite_url: str) -> Iterator[tuple[Registry, Gateway, str]]:
    registry, (obama,) = new_registry(tmp_path / "home", sqlite_url, [OBAMA], pki=True)
    registry.add_grantee("Studio")
    yield registry, sface_gateway(registry), obama
    registry.close()


def test_generation_is_released_signed_and_verifies(world, model: Path) -> None:  # type: ignore[no-untyped-def]
    registry, gateway, _ = world
    receipt = run_job(gateway, RunRequest("Studio", "generate", "a red house", model, steps=4))
    assert receipt.allowed and len(receipt.outputs) == 1
    result = verify_media(registry, receipt.outputs[0], "image/png")
    assert result.ok, (result.codes, result.consent_reason)
    assert result.decision_id == receipt.decision_id
    decision = get_decision(registry, receipt.decision_id or "")
    assert decision.allowed and len(decision.outputs) == 1


def test_prompt_naming_a_subject_without_grant_releases_nothing(world, model: Path) -> None:  # type: ignore[no-untyped-def]
    registry, gateway, _ = world
    size = registry.log_size()
    receipt = run_job(gateway, RunRequest("Studio", "generate", "Obama waving", model, steps=4))
    assert not receipt.allowed and receipt.outputs == []
    assert registry.log_size() == size + 1  # the refusal is logged


class RevokingBackend:
    """The real backend, plus a revocation logged while the job runs."""

    def __init__(self, model: Path, registry: Registry, grant_id: str) -> None:
        self.inner = DiffusersBackend(model)
        self.registry, self.grant_id = registry, grant_id

    def text2img(
        self,
        prompt: str,
        steps: int,
        size: int,
        seed: int,
        prior: PriorRef | None = None,
        **kw: Any,
    ) -> list[Any]:
        images = self.inner.text2img(prompt, steps, size, seed, prior)
        self.registry.revoke(self.grant_id, "revoked mid-job")
        return images

    def img2img(self, *args: Any, **kw: Any) -> list[Any]:
        raise AssertionError("not used")


def test_revocation_during_a_running_job_withholds_the_output(world, model: Path) -> None:  # type: ignore[no-untyped-def]
    registry, gateway, obama = world
    grant = registry.grant(obama, "Studio", ["generate"])
    backend = RevokingBackend(model, registry, grant.id)
    receipt = run_job(gateway, RunRequest("Studio", "generate", "Obama", model, steps=4), backend)
    assert not receipt.allowed and receipt.outputs == []
    assert any("revoked" in r for r in receipt.reasons)
    assert not get_decision(registry, receipt.decision_id or "").allowed


class FailingBackend:
    def text2img(self, *args: Any, **kw: Any) -> list[Any]:
        raise RuntimeError("CUDA out of memory (simulated)")

    def img2img(self, *args: Any, **kw: Any) -> list[Any]:
        raise RuntimeError("CUDA out of memory (simulated)")


def test_an_exception_in_the_backend_refuses_and_is_logged(world, model: Path) -> None:  # type: ignore[no-untyped-def]
    _registry, gateway, _ = world
    receipt = run_job(
        gateway, RunRequest("Studio", "generate", "a house", model, steps=4), FailingBackend()
    )  # type: ignore[arg-type]
    assert not receipt.allowed and receipt.outputs == []
    assert any("internal error" in r for r in receipt.reasons)
    assert receipt.log_index is not None


def test_restore_of_a_registered_face_needs_a_grant(world, model: Path) -> None:  # type: ignore[no-untyped-def]
    registry, gateway, obama = world
    photo = PHOTOS / "obama2.jpg"
    request = RunRequest("Studio", "restore", "a sharp photo", model, photo, steps=4)
    assert not run_job(gateway, request).allowed
    registry.grant(obama, "Studio", ["restore"])
    receipt = run_job(gateway, request)
    assert receipt.allowed and len(receipt.outputs) == 1
    result = verify_media(registry, receipt.outputs[0], "image/png")
    assert result.ok and result.subject_ids == [obama]


def test_generate_and_verify_through_the_cli(tmp_path: Path, model: Path) -> None:
    cli = Cli(tmp_path / "home")
    cli.ok("init")
    cli.ok("grantee", "add", "Studio")
    out = tmp_path / "house.png"
    result = cli(
        "generate",
        "--as",
        "Studio",
        "--prompt",
        "a red house",
        "--model",
        str(model),
        "--steps",
        "4",
        "--size",
        "64",
        "-o",
        str(out),
    )
    assert result.code == 0, result.err
    assert out.exists()
    assert cli("verify", str(out)).code == 0
    cli.ok("subject", "add", "Barack Obama", "--alias", "Obama")
    refused_out = tmp_path / "obama.png"
    refused = cli(
        "generate",
        "--as",
        "Studio",
        "--prompt",
        "obama",
        "--model",
        str(model),
        "--steps",
        "4",
        "--size",
        "64",
        "-o",
        str(refused_out),
    )
    assert refused.code == 1 and not refused_out.exists()


STAGES = {
    "load faces": "consentry.gate.gateway.Gateway._faces",
    "read prior": "consentry.gate.gateway.Gateway._prior",
    "read grants": "consentry.gate.gateway.Gateway._grants",
    "match prompt": "consentry.gate.gateway.Gateway._prompt_subjects",
    "decide": "consentry.gate.gateway.decide",
    "sign": "consentry.gate.release.sign_outputs",
}


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_an_exception_in_each_stage_refuses_and_releases_nothing(
    world,
    model: Path,
    stage: str,
    monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
) -> None:
    """Fault injection: the stage's real code is replaced by one that raises."""
    registry, gateway, _ = world
    target = STAGES[stage]

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"injected failure in {stage}")

    monkeypatch.setattr(target, boom)
    size = registry.log_size()
    receipt = run_job(gateway, RunRequest("Studio", "generate", "a house", model, steps=2))
    assert not receipt.allowed and receipt.outputs == []
    assert any("injected failure" in r for r in receipt.reasons), receipt.reasons
    assert registry.log_size() > size  # the refusal is logged
