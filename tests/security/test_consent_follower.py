"""The consent follower: what it trusts, where it stops, and its sealed snapshot.

Attacks on the log itself (not the rows): a leaf edited with a consistent leaf hash
but no valid signature, the whole log replaced by one under another operator key,
and a snapshot forged, or left over from a log whose prefix was rewritten. Each is
refused, and the honest registry is allowed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from consentry.errors import RollbackError
from consentry.faces.engine import FaceEngine
from consentry.faces.engines import get_engine
from consentry.gate import CheckRequest, Gateway, is_integrity_failure
from consentry.registry import consent
from consentry.registry.decisions import record_decision
from consentry.registry.store import Registry
from tests.security.conftest import World, raw, raw_insert, rewrite_leaf

PROMPT = "a portrait of Alice Example"


@pytest.fixture(scope="module")
def engine() -> FaceEngine:
    return get_engine("sface")


def reopen(w: World, witness_dir: Path | None = None) -> Registry:
    return Registry.open(
        w.registry.home.root, w.registry.db.url, clock=w.clock, witness_dir=witness_dir
    )


def fresh_check(
    w: World, engine: FaceEngine, job: CheckRequest, witness_dir: Path | None = None
) -> tuple[bool, bool, Any]:
    """(allowed, integrity failure, reasons) of ``job`` in a new process's gateway
    (with its own witness folder when ``witness_dir`` is given)."""
    registry = reopen(w, witness_dir)
    try:
        receipt = Gateway(registry, engine).check(job)
        return receipt.allowed, is_integrity_failure(receipt), receipt.reasons
    finally:
        registry.close()


def _widen_signed_leaf(w: World) -> None:
    """Edit the grant's statement inside its leaf (the signature no longer matches)."""

    def widen(leaf: dict[str, Any]) -> None:
        import base64

        payload = json.loads(base64.b64decode(leaf["envelope"]["payload"]))
        payload["purposes"] = ["generate", "restore", "train"]
        canonical = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
        leaf["envelope"]["payload"] = base64.b64encode(canonical).decode()

    rewrite_leaf(w.registry, w.index_of(w.grant_a.id), widen)


@pytest.mark.attack("log leaf edited with a consistent leaf hash")
def test_a_leaf_that_does_not_verify_stops_the_gate(
    world: World, engine: FaceEngine, tmp_path: Path
) -> None:
    w = world
    train = CheckRequest(w.acme.id, "train", prompt=PROMPT)
    plain = CheckRequest(w.acme.id, "generate", prompt="a red house")
    assert fresh_check(w, engine, plain)[0]
    assert not fresh_check(w, engine, train)[0]  # grant_a does not cover train
    _widen_signed_leaf(w)
    # A party that witnessed the log before sees the rewritten prefix at once...
    with pytest.raises(RollbackError):
        reopen(w)
    # ...and one that never saw it (no witness state to compare) is stopped by the
    # follower, which verifies every entry's signature.
    for job in (train, plain):  # every job stops, not only the one the leaf is about
        allowed, integrity, reasons = fresh_check(w, engine, job, tmp_path / "new-witness")
        assert not allowed and integrity, reasons
        assert any("does not verify" in r for r in reasons), reasons


@pytest.mark.attack("log replaced by one under another operator key")
def test_a_log_replaced_under_another_key_is_refused(
    world: World, engine: FaceEngine, tmp_path: Path
) -> None:
    w = world
    job = CheckRequest(w.acme.id, "generate", prompt=PROMPT)
    assert fresh_check(w, engine, job)[0]
    other = Registry.init(tmp_path / "other", f"sqlite:///{tmp_path}/other.db", clock=w.clock)
    try:
        with other.db.read() as session:
            entries = [dict(r._mapping) for r in session.execute(text("SELECT * FROM log_entries"))]
    finally:
        other.close()
    raw(w.registry, "DELETE FROM log_entries")
    for entry in entries:
        raw_insert(w.registry, "log_entries", entry)
    with pytest.raises(RollbackError):  # a party that witnessed the old log
        reopen(w)
    # Even a party with no witness state refuses it: the home's origin names its
    # genesis operator key, and the replaced log starts with another.
    with pytest.raises(RollbackError, match="another log"):
        fresh_check(w, engine, job, tmp_path / "new-witness")


def _fill(w: World, count: int) -> None:
    for _ in range(count):
        record_decision(w.registry, w.acme.id, "generate", True, [], [w.grant_a.id],
                        [w.alice.id], None, [], [])  # fmt: skip


@pytest.mark.attack("consent snapshot forged or stale")
def test_snapshot_is_used_only_while_its_prefix_is_the_log(
    world: World, engine: FaceEngine, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    w = world
    monkeypatch.setattr(consent, "SNAPSHOT_EVERY", 4)
    _fill(w, 5)  # the writer's follower seals a snapshot of the prefix it verified
    path = w.registry.home.root / "cache" / "consent.bin"
    assert path.exists()
    registry = reopen(w)
    try:
        registry.consent.refresh()
        assert registry.consent.loaded_snapshot > 0  # no replay from 0
        assert registry.consent.size == registry.log_size()
    finally:
        registry.close()
    job = CheckRequest(w.acme.id, "train", prompt=PROMPT)
    assert not fresh_check(w, engine, job)[0]
    # a forged snapshot (not sealed under the home's master key) is ignored
    sealed = path.read_bytes()
    path.write_bytes(sealed[:8] + bytes(len(sealed) - 8))
    registry = reopen(w)
    try:
        registry.consent.refresh()
        assert registry.consent.loaded_snapshot == 0
    finally:
        registry.close()
    # the real snapshot, over a log whose prefix was rewritten: replayed, and refused
    path.write_bytes(sealed)
    _widen_signed_leaf(w)
    with pytest.raises(RollbackError):  # a party that witnessed the old log
        reopen(w)
    allowed, integrity, reasons = fresh_check(w, engine, job, tmp_path / "new-witness")
    assert not allowed and integrity, reasons


@pytest.mark.attack("leaf edited in a later chunk of a first catch-up")
def test_a_catch_up_in_small_chunks_follows_the_same_facts_and_stops_at_a_bad_leaf(
    world: World, engine: FaceEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first catch-up reads the log ``TAIL_CHUNK`` entries at a time (bounded
    memory on a long log): with chunks of 2 it reaches the same consent facts as one
    read, and a leaf that does not verify in a later chunk still stops the gate."""
    w = world
    whole = consent.ConsentState(w.registry)
    whole.refresh()
    monkeypatch.setattr(consent, "TAIL_CHUNK", 2)
    chunked = consent.ConsentState(w.registry)
    assert chunked.refresh() == whole.size > 6
    assert (chunked.grants.keys(), chunked.revoked, chunked.priors.keys()) == (
        whole.grants.keys(),
        whole.revoked,
        whole.priors.keys(),
    )
    train = CheckRequest(w.acme.id, "train", prompt=PROMPT)
    plain = CheckRequest(w.acme.id, "generate", prompt="a red house")
    assert fresh_check(w, engine, plain, tmp_path / "first")[0]  # honest: allowed
    _widen_signed_leaf(w)
    for job in (train, plain):
        allowed, integrity, reasons = fresh_check(w, engine, job, tmp_path / "new-witness")
        assert not allowed and integrity, reasons
        assert any("does not verify" in r for r in reasons), reasons
