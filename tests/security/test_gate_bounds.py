"""Attacks on what the gate assumes of a job: a prompt too long to match in bounded
time, and a prior file that an older registry let two subjects register.

Each test asserts the refusal *and* that the honest equivalent is allowed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save

from consentry.gate import CheckRequest
from consentry.limits import Limits
from consentry.registry.models import Prior
from consentry.registry.prior_files import store_prior_file
from consentry.registry.signing import canonical_json
from consentry.registry.statements import format_time
from tests.support.cli import Cli
from tests.support.worlds import TwoSubjects, two_subjects


@pytest.fixture
def world(tmp_path: Path, sqlite_url: str) -> Iterator[TwoSubjects]:
    """Ada Lovelace (the owner: her name fills the long prompt) and Bob Example."""
    yield from two_subjects(tmp_path, sqlite_url, "Ada Lovelace", "Bob Example")


@pytest.mark.attack("prompt longer than the job limit")
@pytest.mark.parametrize(
    "filler", ["a " * 1_500, "x" * 2_001, "Ada Lovelace " * 200], ids=["words", "run", "names"]
)
def test_an_oversized_prompt_is_refused_before_matching(world: TwoSubjects, filler: str) -> None:
    w = world
    w.registry.grant(w.owner, "Studio", ["generate"])
    prompt = f"a portrait of {filler}"
    assert len(prompt) > Limits().max_prompt_chars
    before = w.registry.log_size()
    refused = w.gateway.check(CheckRequest("Studio", "generate", [], prompt))
    assert not refused.allowed and refused.log_index == before  # a logged refusal
    assert any("at most 2000" in r for r in refused.reasons), refused.reasons
    honest = w.gateway.check(CheckRequest("Studio", "generate", [], prompt[:1_000]))
    assert honest.allowed, honest.reasons


@pytest.mark.attack("prompt longer than the job limit through the CLI")
def test_an_oversized_prompt_exits_2_through_the_cli(world: TwoSubjects) -> None:
    cli = Cli(world.registry.home.root, world.registry.db.url)
    before = world.registry.log_size()
    long = cli("check", "--as", "Studio", "--purpose", "generate", "--prompt", "b" * 2_001)
    assert long.code == 2 and "at most 2000" in long.err and "Traceback" not in long.err
    assert world.registry.log_size() == before  # refused before anything was logged
    short = cli("check", "--as", "Studio", "--purpose", "generate", "--prompt", "a red barn")
    assert short.code == 0, short.err


def _weights() -> bytes:
    rng = np.random.default_rng(3)
    return save({"lora.weight": rng.standard_normal((4, 8)).astype(np.float32)})


@pytest.mark.attack("one prior file registered for two subjects by an older release")
def test_a_prior_file_held_by_two_subjects_is_unusable(world: TwoSubjects) -> None:
    w = world
    source = w.folder / "ada.safetensors"
    source.write_bytes(_weights())
    ada_prior = w.registry.add_prior(w.owner, "lora", "tiny-sd", source)
    store_prior_file(w.registry, ada_prior, source)
    w.registry.grant(w.owner, "Studio", ["generate"], priors=[ada_prior.sha256])
    job = CheckRequest("Studio", "generate", [], "a watercolour", prior=ada_prior.id)
    honest = w.gateway.check(job)
    assert honest.allowed, honest.reasons
    # What release 0.1.0 allowed: the same bytes signed and logged as Bob's prior too
    # (written through the operator's own append path, as that release did).
    bobs = Prior(
        id=w.registry.new_id("pri"),
        subject_id=w.other,
        kind="lora",
        base_model_id="tiny-sd",
        sha256=ada_prior.sha256,
        size=ada_prior.size,
        details_json=canonical_json({}).decode(),
        created_at=format_time(w.registry.now()),
        log_index=-1,
    )
    w.registry._sign_and_append(bobs)
    w.registry.grant(w.other, "Studio", ["generate"], priors=[ada_prior.sha256])
    assert w.registry.verify_log().ok  # a legitimately signed, if old, history
    for prior_id in (ada_prior.id, bobs.id):
        refused = w.gateway.check(CheckRequest("Studio", "generate", [], "a watercolour",
                                               prior=prior_id))  # fmt: skip
        assert not refused.allowed
        assert any("registered for 2 subjects" in r for r in refused.reasons), refused.reasons
