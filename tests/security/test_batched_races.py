"""Revocation wins the race with a *batch* of decisions (issue 12, group commit).

Decisions are written in batches (``consentry.registry.sequencer``): many allows
share one writer transaction and are re-checked there, each at its own index. The
attack: a revocation committed by another connection while callers are deciding,
or after they gathered their facts but before their batch took the writer lock.
No allow naming the grant may be logged at an index after the revocation's; the
same jobs before the revocation are allowed.
"""

from __future__ import annotations

import json
import threading
import time

import pytest
from sqlmodel import col, select

from consentry.registry.decisions import RACE_PREFIX, prepare_decision, record_decision
from consentry.registry.models import Decision
from consentry.registry.sequencer import DecisionSequencer
from consentry.registry.store import Registry
from tests.security.conftest import World, assert_ok, assert_rows_match_log

DECIDERS = 8


def _decisions(w: World) -> list[Decision]:
    with w.registry.db.read() as session:
        return list(session.exec(select(Decision).order_by(col(Decision.log_index))))


@pytest.mark.attack("batched-revocation-race")
def test_a_revocation_racing_batches_never_leaves_a_later_allow(world: World) -> None:
    w = world
    grant = w.grant_a  # alice -> acme, generate, valid at the fixed clock
    # a short linger makes batches of several decisions certain under the race
    w.registry.sequencer = DecisionSequencer(w.registry, max_wait=0.005)
    stop = threading.Event()
    revoked_at: list[int] = []
    errors: list[BaseException] = []
    counter = iter(range(1_000_000))
    lock = threading.Lock()

    def decider() -> None:
        try:
            while not stop.is_set():
                with lock:
                    n = next(counter)
                record_decision(
                    w.registry, w.acme.id, "generate", True, [], [grant.id], [w.alice.id],
                    None, [f"{n:064x}"], [],
                )  # fmt: skip
        except BaseException as exc:
            errors.append(exc)

    pool = [threading.Thread(target=decider) for _ in range(DECIDERS)]
    for thread in pool:
        thread.start()
    try:
        deadline = time.monotonic() + 60
        while w.registry.sequencer.stats().decisions < 40 and time.monotonic() < deadline:
            time.sleep(0.01)
        other = Registry.open(w.registry.home.root, w.registry.db.url, clock=w.clock)
        try:  # another process's revocation, co-signed by Alice, mid-stream
            revoked_at.append(
                other.revoke(grant.id, "consent withdrawn mid-batch", subject_key=w.alice_key)
                .log_index
            )
        finally:
            other.close()
        after = w.registry.sequencer.stats().decisions
        while w.registry.sequencer.stats().decisions < after + 60 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        stop.set()
        for thread in pool:
            thread.join(timeout=60)
    assert not errors, errors
    (revocation,) = revoked_at
    rows = [r for r in _decisions(w) if grant.id in json.loads(r.grants_json)]
    before = [r for r in rows if r.log_index < revocation]
    later = [r for r in rows if r.log_index > revocation]
    assert len(before) >= 40 and len(later) >= 60, (len(before), len(later))
    assert w.registry.sequencer.stats().largest_batch > 1, "no batch was formed"
    # the honest jobs, before the revocation, were allowed
    assert all(r.allowed for r in before), [r.reasons for r in before if not r.allowed]
    # no allow was logged after the revocation's index
    allowed_later = [r.log_index for r in later if r.allowed]
    assert not allowed_later, f"allows logged after the revocation at {revocation}: {allowed_later}"
    for row in later:
        assert f"was revoked at log index {revocation}" in row.reasons[0], row.reasons
    assert_rows_match_log(w.registry)
    assert_ok(w.registry.verify_log())


@pytest.mark.attack("batched-revocation-race")
def test_a_batch_gathered_before_a_revocation_is_refused_at_release(world: World) -> None:
    """The callers' consent state predates the revocation (their facts were gathered
    before it committed); only the batch's own re-check under the writer lock sees it."""
    w = world
    grant = w.grant_a

    def job(n: int) -> object:
        return prepare_decision(
            w.acme.id, "generate", True, [], [grant.id], [w.alice.id], None, [f"{n:064x}"], []
        )

    w.registry.consent.refresh()
    honest = [w.registry.sequencer.submit(job(n)) for n in range(3)]
    assert all(r.allowed for r in honest), [r.reasons for r in honest]
    other = Registry.open(w.registry.home.root, w.registry.db.url, clock=w.clock)
    try:
        revocation = other.revoke(grant.id, "withdrawn", subject_key=w.alice_key).log_index
    finally:
        other.close()
    assert grant.id not in w.registry.consent.revoked  # stale, as a racing gateway's is
    results: dict[int, Decision] = {}
    go = threading.Barrier(6)

    def caller(n: int) -> None:
        go.wait()
        results[n] = w.registry.sequencer.submit(job(n))

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(10, 16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(results) == 6
    for row in results.values():
        assert row.log_index > revocation and not row.allowed
        assert row.reasons[0].startswith(RACE_PREFIX)
        assert f"was revoked at log index {revocation}" in row.reasons[0]
    assert_ok(w.registry.verify_log())
