"""A subject's own view (consentry.registry.subject_view): the request is theirs, once,
for this registry, now; and the answer cannot misstate what the log holds."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from consentry.errors import ProofError, SignatureError
from consentry.registry.decisions import record_decision
from consentry.registry.reviews import hold_record
from consentry.registry.signing import SigningKey
from consentry.registry.store import Registry
from consentry.registry.subject_view import (
    NonceCache,
    authenticate,
    make_request,
    subject_view,
    verify_view,
)
from tests.support.clock import T0, Clock


@dataclass
class Scene:
    registry: Registry
    clock: Clock
    ada: str
    ada_key: SigningKey
    bob: str


@pytest.fixture
def scene(tmp_path: Path) -> Iterator[Scene]:
    clock = Clock()
    registry = Registry.init(tmp_path / "home", f"sqlite:///{tmp_path}/r.db", clock=clock)
    key = SigningKey.generate()
    ada = registry.add_subject("Ada", public_key=key.public_key)
    bob = registry.add_subject("Bob")
    studio, _ = registry.add_grantee("Studio")
    record_decision(
        registry, studio.id, "restore", False, ["no active grant"], [], [ada.id], None, [], []
    )
    record_decision(
        registry, studio.id, "restore", False, ["no active grant"], [], [bob.id], None, [], []
    )
    held = hold_record([(0, 0, ada.id, 0.41)], [], (0.35, 0.45))
    record_decision(registry, studio.id, "restore", False, ["held for review"], [], [ada.id],
                    None, ["ab" * 32], [], held=held)  # fmt: skip
    registry.checkpoint()
    yield Scene(registry, clock, ada.id, key, bob.id)
    registry.close()


def _request(s: Scene, **overrides: object) -> object:
    key = overrides.pop("key", s.ada_key)
    subject = overrides.pop("subject", s.ada)
    audience = overrides.pop("audience", s.registry.key_id)
    moment = overrides.pop("now", T0)
    return make_request(key, subject, audience, moment)  # type: ignore[arg-type]


def test_the_subject_sees_only_their_decisions_and_each_verifies(scene: Scene) -> None:
    subject = authenticate(scene.registry, _request(scene), NonceCache())  # type: ignore[arg-type]
    view = subject_view(scene.registry, subject)
    assert [d["outcome"] for d in view["decisions"]] == ["held", "refused"]  # newest first
    operator = SigningKey.load(scene.registry.home.operator_key).public_key
    assert verify_view(view, [operator]) == 2


@pytest.mark.attack("subject view request replayed")
def test_a_captured_request_cannot_be_replayed(scene: Scene) -> None:
    nonces = NonceCache()
    request = _request(scene)
    assert authenticate(scene.registry, request, nonces) == scene.ada  # type: ignore[arg-type]
    with pytest.raises(SignatureError, match="replay"):
        authenticate(scene.registry, request, nonces)  # type: ignore[arg-type]
    assert authenticate(scene.registry, _request(scene), nonces) == scene.ada  # type: ignore[arg-type]


@pytest.mark.attack("subject view request signed by another key")
def test_a_request_signed_by_another_key_is_refused(scene: Scene) -> None:
    with pytest.raises(SignatureError):
        authenticate(scene.registry, _request(scene, key=SigningKey.generate()), NonceCache())  # type: ignore[arg-type]
    # nor can a keyless subject's view be asked for by anyone's key
    with pytest.raises(SignatureError, match="holds no key"):
        authenticate(scene.registry, _request(scene, subject=scene.bob), NonceCache())  # type: ignore[arg-type]
    assert authenticate(scene.registry, _request(scene), NonceCache()) == scene.ada  # type: ignore[arg-type]


@pytest.mark.attack("subject view request made for another registry")
def test_a_request_for_another_registry_is_refused(scene: Scene) -> None:
    elsewhere = SigningKey.generate().key_id
    with pytest.raises(SignatureError, match="audience"):
        authenticate(scene.registry, _request(scene, audience=elsewhere), NonceCache())  # type: ignore[arg-type]


@pytest.mark.attack("subject view request stale")
def test_a_stale_or_future_request_is_refused(scene: Scene) -> None:
    for moment in (T0 - timedelta(minutes=6), T0 + timedelta(minutes=6)):
        with pytest.raises(SignatureError, match="minutes from the registry"):
            authenticate(scene.registry, _request(scene, now=moment), NonceCache())  # type: ignore[arg-type]
    ok = _request(scene, now=T0 - timedelta(minutes=4))
    assert authenticate(scene.registry, ok, NonceCache()) == scene.ada  # type: ignore[arg-type]


@pytest.mark.attack("subject view answer misstates the log")
def test_an_answer_that_misstates_a_decision_fails_verification(scene: Scene) -> None:
    view = subject_view(scene.registry, scene.ada)
    operator = SigningKey.load(scene.registry.home.operator_key).public_key
    for index, shown in ((0, "refused"), (1, "allowed")):  # a hold hidden, a refusal an allow
        relabelled = copy.deepcopy(view)
        relabelled["decisions"][index]["outcome"] = shown
        with pytest.raises(ProofError, match="outcome"):
            verify_view(relabelled, [operator])
    bobs = subject_view(scene.registry, scene.bob)
    borrowed = copy.deepcopy(view)
    borrowed["decisions"] = bobs["decisions"]  # someone else's decision passed off
    with pytest.raises(ProofError, match="other subjects"):
        verify_view(borrowed, [operator])
    with pytest.raises(Exception, match="checkpoint"):
        verify_view(view, [SigningKey.generate().public_key])  # not the operator's
    assert verify_view(view, [operator]) == 2
