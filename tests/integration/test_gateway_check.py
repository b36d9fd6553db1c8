"""The gateway's decision path on real photos, a real registry and the real CLI."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save

from consentry import Registry
from consentry.gate import CheckRequest, Gateway
from consentry.registry.decisions import get_decision
from consentry.registry.prior_files import prior_store_path
from tests.support.cli import Cli
from tests.support.faces import PHOTOS
from tests.support.worlds import BIDEN, OBAMA, new_registry, sface_gateway


@pytest.fixture
def world(tmp_path: Path, sqlite_url: str) -> Iterator[tuple[Registry, Gateway, dict[str, str]]]:
    registry, (obama, biden) = new_registry(tmp_path / "home", sqlite_url, [OBAMA, BIDEN])
    studio, _ = registry.add_grantee("Studio")
    ids = {"obama": obama, "biden": biden, "studio": studio.id}
    yield registry, sface_gateway(registry), ids
    registry.close()


def _prior(registry: Registry, subject: str, tmp_path: Path, content: bytes) -> tuple[str, str]:
    source = tmp_path / f"{subject}.safetensors"
    source.write_bytes(content)
    row = registry.add_prior(subject, "lora", "tiny-sd", source)
    target = prior_store_path(registry, row.sha256)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(content)
    return row.id, row.sha256


def test_registered_face_needs_a_grant_and_every_decision_is_logged(world) -> None:  # type: ignore[no-untyped-def]
    registry, gateway, ids = world
    refused = gateway.check(CheckRequest("Studio", "restore", [PHOTOS / "obama2.jpg"]))
    assert not refused.allowed and refused.log_index is not None
    assert any("no active grant" in r for r in refused.reasons)
    grant = registry.grant(ids["obama"], "Studio", ["restore"])
    allowed = gateway.check(CheckRequest("Studio", "restore", [PHOTOS / "obama2.jpg"]))
    assert allowed.allowed and allowed.grants == (grant.id,)
    decision = get_decision(registry, allowed.decision_id or "")
    assert decision.allowed and decision.log_index == allowed.log_index
    registry.revoke(grant.id, "withdrawn")
    again = gateway.check(CheckRequest("Studio", "restore", [PHOTOS / "obama2.jpg"]))
    assert not again.allowed and any("revoked" in r for r in again.reasons)
    registry.checkpoint()
    assert registry.verify_log().ok


def test_unregistered_faces_allowed_unless_configured(world) -> None:  # type: ignore[no-untyped-def]
    registry, gateway, _ = world
    assert gateway.check(CheckRequest("Studio", "restore", [PHOTOS / "astronaut.jpg"])).allowed
    strict = Gateway(registry, gateway.engine, refuse_unknown_faces=True)
    receipt = strict.check(CheckRequest("Studio", "restore", [PHOTOS / "astronaut.jpg"]))
    assert not receipt.allowed and any("unregistered face" in r for r in receipt.reasons)


def test_prompt_alias_needs_a_grant(world) -> None:  # type: ignore[no-untyped-def]
    registry, gateway, ids = world
    receipt = gateway.check(CheckRequest("Studio", "generate", [], "a portrait of OBAMA at dusk"))
    assert not receipt.allowed and any("prompt names" in r for r in receipt.reasons)
    assert gateway.check(CheckRequest("Studio", "generate", [], "obamacare chart")).allowed
    registry.grant(ids["obama"], "Studio", ["generate"])
    assert gateway.check(CheckRequest("Studio", "generate", [], "Obama, smiling")).allowed


def test_prior_rules(world, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    registry, gateway, ids = world
    weights = save({"lora_down": np.full((2, 4), 0.5, np.float32)})  # a real safetensors file
    prior_id, sha = _prior(registry, ids["biden"], tmp_path, weights)
    registry.grant(ids["obama"], "Studio", ["restore"])
    registry.grant(ids["biden"], "Studio", ["restore"], priors=[sha])
    # Biden's prior on Obama's photo paints Biden onto Obama
    painted = gateway.check(
        CheckRequest("Studio", "restore", [PHOTOS / "obama2.jpg"], "", prior_id)
    )
    assert not painted.allowed and any("belongs to" in r for r in painted.reasons)
    assert gateway.check(CheckRequest("Studio", "restore", [], "", prior_id)).allowed
    prior_store_path(registry, sha).write_bytes(b"swapped weights")
    swapped = gateway.check(CheckRequest("Studio", "restore", [], "", prior_id))
    assert not swapped.allowed and any("hash differs" in r for r in swapped.reasons)


def test_bad_input_is_refused_and_logged(world, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    registry, gateway, _ = world
    corrupt = tmp_path / "x.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff garbage")
    size = registry.log_size()
    receipt = gateway.check(CheckRequest("Studio", "restore", [corrupt]))
    assert not receipt.allowed and receipt.log_index == size
    unknown = gateway.check(CheckRequest("Nobody", "restore", [PHOTOS / "obama2.jpg"]))
    assert not unknown.allowed and unknown.decision_id is None


def test_check_cli_exit_codes(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "home")
    cli.ok("init")
    cli.ok("subject", "add", "Barack Obama")
    cli.ok("subject", "enroll", "Barack Obama", str(PHOTOS / "obama.jpg"))
    cli.ok("grantee", "add", "Studio")
    refused = cli(
        "check", str(PHOTOS / "obama2.jpg"), "--as", "Studio", "--purpose", "restore", "--json"
    )
    assert refused.code == 1 and json.loads(refused.out)["allowed"] is False
    cli.ok("grant", "Barack Obama", "--to", "Studio", "--purpose", "restore")
    allowed = cli("check", str(PHOTOS / "obama2.jpg"), "--as", "Studio", "--purpose", "restore")
    assert allowed.code == 0 and allowed.out.startswith("ALLOW")
    assert cli("check", "--as", "Studio").code == 2
