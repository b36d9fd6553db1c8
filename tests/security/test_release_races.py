"""Revocation (and erasure) wins every race with a job (issue 11, class 6).

The race is forced on the real code path: the gateway gathers its facts, then
another connection (a second Registry over the same database, in another thread)
commits a revocation or an erasure, then the gateway records its decision. The
allow must be re-checked inside the decision's write transaction and logged as a
refusal. Each test also runs the same job without the interfering write: allowed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from consentry.faces.engine import FaceEngine
from consentry.faces.engines import get_engine
from consentry.gate import CheckRequest, Gateway, RunRequest, run_job
from consentry.gate.policy import GrantFact, PriorFact
from consentry.generation.backends.base import PriorRef
from consentry.provenance.certs import create_dev_pki
from consentry.provenance.verify import verify_media
from consentry.registry.biometrics import erase_subject
from consentry.registry.decisions import get_decision
from consentry.registry.prior_files import prior_store_path
from consentry.registry.signing import sha256_hex
from consentry.registry.store import Registry
from tests.security.conftest import World

Write = Callable[[Registry, World], object]


@pytest.fixture(scope="module")
def engine() -> FaceEngine:
    return get_engine("sface")


def _revoke(other: Registry, w: World) -> object:
    return other.revoke(w.grant_a.id, "consent withdrawn mid-job", subject_key=w.alice_key)


def _erase(other: Registry, w: World) -> object:
    return erase_subject(other, w.alice.id, "erasure requested mid-job")


RACES: dict[str, tuple[Write, str]] = {
    "revocation": (_revoke, "was revoked at log index"),
    "erasure": (_erase, "whose prior the job uses, was erased at log index"),
}


def alices_prior(w: World) -> str:
    """A prior of Alice's, its file in the store, and her grant (grant_a) for it: an
    erasure ends its use (consent to her name and face outlives an erasure)."""
    content = b"alice's lora weights (race test)"
    sha = sha256_hex(content)
    prior = w.registry.add_prior(w.alice.id, "lora", "tiny-sd", sha256=sha, size=len(content))
    target = prior_store_path(w.registry, sha)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(content)
    grant = w.registry.grant(w.alice.id, w.acme.id, ["generate"], priors=[sha],
                             subject_key=w.alice_key)  # fmt: skip
    w.grant_a = grant  # the grant the revocation race withdraws
    return prior.id


class RacingGateway(Gateway):
    """The real gateway; right after its ``fire_on``-th gathering of grant facts,
    another connection commits ``write`` (and the gateway goes on with what it read)."""

    def __init__(self, w: World, engine: FaceEngine, write: Write | None, fire_on: int = 1) -> None:
        super().__init__(w.registry, engine)
        self.w, self.write, self.fire_on, self.calls = w, write, fire_on, 0
        self.committed: list[object] = []

    def _grants(self, subjects: set[str], prior: PriorFact | None) -> list[GrantFact]:
        facts = super()._grants(subjects, prior)
        self.calls += 1
        if self.write is not None and self.calls == self.fire_on:
            write = self.write

            def other_process() -> None:
                other = Registry.open(self.w.registry.home.root, self.w.registry.db.url)
                try:
                    self.committed.append(write(other, self.w))
                finally:
                    other.close()

            thread = threading.Thread(target=other_process)
            thread.start()
            thread.join(timeout=60)
            assert self.committed, "the interfering write did not commit"
        return facts


JOB_PROMPT = "a portrait of Alice Example"


@pytest.mark.attack("revocation or erasure committed between fact gathering and the decision")
@pytest.mark.parametrize("race", RACES)
def test_check_recheck_inside_the_decision_transaction(
    world: World, engine: FaceEngine, race: str
) -> None:
    w = world
    write, reason = RACES[race]
    job = CheckRequest(w.acme.id, "generate", prompt=JOB_PROMPT, prior=alices_prior(w))
    honest = RacingGateway(w, engine, None).check(job)
    assert honest.allowed, honest.reasons
    gateway = RacingGateway(w, engine, write)
    receipt = gateway.check(job)
    assert gateway.committed, "the race was not forced"
    assert not receipt.allowed, receipt.reasons
    assert any(reason in r for r in receipt.reasons), receipt.reasons
    assert receipt.decision_id is not None
    logged = get_decision(w.registry, receipt.decision_id)
    assert not logged.allowed and any(reason in r for r in logged.reasons)
    assert w.registry.verify_log().ok, w.registry.verify_log().problems


class PlainBackend:
    """A real (if plain) backend: one grey image per call, no faces in it."""

    def text2img(
        self,
        prompt: str,
        steps: int,
        size: int | tuple[int, int],
        seed: int,
        prior: PriorRef | None = None,
    ) -> list[Image.Image]:
        side = size if isinstance(size, int) else size[0]
        return [Image.new("RGB", (side, side), (120, 130, 140))]

    def img2img(
        self,
        image: Image.Image,
        prompt: str,
        strength: float,
        steps: int,
        seed: int,
        prior: PriorRef | None = None,
    ) -> list[Image.Image]:
        return [image.convert("RGB")]


@pytest.mark.attack("revocation or erasure committed between fact gathering and the decision")
@pytest.mark.parametrize("race", RACES)
def test_run_job_recheck_between_post_check_and_record(
    world: World, engine: FaceEngine, race: str, tmp_path: Path
) -> None:
    """The second gathering is the post-check's: the write lands after it."""
    w = world
    create_dev_pki(w.registry.home.root)
    write, reason = RACES[race]
    prior = alices_prior(w)
    job = RunRequest(w.acme.id, "generate", JOB_PROMPT, tmp_path, prior=prior, steps=1, size=64)
    honest = run_job(RacingGateway(w, engine, None), job, PlainBackend())
    assert honest.allowed and len(honest.outputs) == 1, honest.reasons
    assert verify_media(w.registry, honest.outputs[0], "image/png").ok
    gateway = RacingGateway(w, engine, write, fire_on=2)
    receipt = run_job(gateway, job, PlainBackend())
    assert gateway.committed and gateway.calls == 2
    assert not receipt.allowed and receipt.outputs == [], receipt.reasons
    assert any(reason in r for r in receipt.reasons), receipt.reasons
    assert receipt.decision_id is not None
    assert not get_decision(w.registry, receipt.decision_id).allowed
